"""The `mxlab` command line: a module per command group, each a thin layer over the
Python API (mxlab.Lab); tables render in mxlab.cli.render."""

from __future__ import annotations

import sys

from mxlab.cli import (  # noqa: F401 - each module registers its commands
    ansible,
    cert,
    check,
    dns,
    exercise,
    explain,
    export,
    graph,
    image,
    lab,
    mail,
    nodes,
    queue,
    records,
    scenario,
    sink,
    ui,
)
from mxlab.cli.app import app, err

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: every known failure is one line on stderr and exit 2, never a
    traceback; 1 means the lab ran and a check failed."""
    from mxlab.lab.errors import LabError
    from mxlab.lab.topology import TopologyError

    try:
        code = app(standalone_mode=False)
    except (TopologyError, LabError) as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # click's usage errors (missing option, unknown command): one line, exit 2
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                hint = f" (see: {ctx.command_path} --help)"
            err.print(f"error: {exc.format_message()}{hint}", markup=False)
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)
