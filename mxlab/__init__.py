"""mxlab: a containerised mail cluster as a lab.

The public API (semver-minded: what is listed here is what is promised):

- :class:`Lab`: up / attach / down, users and endpoints, send, mailbox, queue, trace,
  faults (kill, start, stop, restart, cut, restore, impair, dns_fail), check.
- :class:`Mailbox`, :class:`Sent`, :class:`User`, :class:`CheckReport`: what it returns.
- :func:`validate`, :func:`labs`, :func:`labelled`, :func:`down`, :func:`gc`,
  :func:`build_image`, :func:`run_scenario`.
- :class:`LabError` (one line, what to do) and :class:`TopologyError` (file: field: fix),
  :class:`SendRefused` (the relay's SMTP reply).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxlab.api import (
        CheckReport,
        Lab,
        Mailbox,
        SendRefused,
        Sent,
        User,
        build_image,
        down,
        gc,
        labelled,
        labs,
        run_scenario,
        validate,
    )
    from mxlab.lab.errors import LabError
    from mxlab.lab.topology import TopologyError

__version__ = "0.2.0"

__all__ = [
    "CheckReport",
    "Lab",
    "LabError",
    "Mailbox",
    "SendRefused",
    "Sent",
    "TopologyError",
    "User",
    "__version__",
    "build_image",
    "down",
    "gc",
    "labelled",
    "labs",
    "run_scenario",
    "validate",
]


def __getattr__(name: str) -> Any:
    """Import the API on first use (PEP 562): a node process imports this package too,
    and must not pay for the lab side (pydantic models, YAML, docker SDK, typer)."""
    if name == "LabError":
        from mxlab.lab.errors import LabError

        return LabError
    if name == "TopologyError":
        from mxlab.lab.topology import TopologyError

        return TopologyError
    if name in __all__:
        import mxlab.api

        return getattr(mxlab.api, name)
    raise AttributeError(f"module 'mxlab' has no attribute {name!r}")
