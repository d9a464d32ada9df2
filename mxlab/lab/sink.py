"""Reading what a sink kept: a sink node of a lab (its state directory in the lab
directory) or a sink started on the host with ``mxlab sink serve --dir DIR``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan
from mxlab.nodes.config import SinkNodeConfig
from mxlab.nodes.sink.record import SinkMessage, messages
from mxlab.nodes.sink.server import serve, sink_dir

POLL = 0.05

__all__ = ["Sink", "SinkMessage", "node_sink", "run_sink"]


class Sink:
    """The record of one sink: every message it accepted, envelope and bytes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def messages(self) -> list[SinkMessage]:
        """What the sink kept so far, oldest first."""
        return messages(self.directory) if self.directory.is_dir() else []

    def find(self, message_id: str) -> list[SinkMessage]:
        """The kept messages whose Message-ID is ``message_id`` (one per SMTP transaction)."""
        want = message_id.strip().lower()
        return [m for m in self.messages() if m.message_id.lower() == want]

    def wait_for(self, message_id: str, timeout: float = 30.0) -> SinkMessage:
        """The first kept message with this Message-ID; polls until ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (found := self.find(message_id)):
            if time.monotonic() > deadline:
                held = len(self.messages())
                raise LabError(
                    f"sink {self.directory}: no message {message_id} within {timeout:g}s "
                    f"({held} kept)"
                )
            time.sleep(POLL)
        return found[0]


def node_sink(plan: LabPlan, node: str) -> Sink:
    """The sink node ``node``'s record, read from the lab directory on this machine."""
    n = plan.nodes.get(node)
    if n is None or n.kind != "sink":
        sinks = ", ".join(x.name for x in plan.nodes.values() if x.kind == "sink") or "none"
        raise LabError(f"lab {plan.lab} has no sink node {node!r} (sinks: {sinks})")
    if plan.runtime not in ("local", "docker"):
        raise LabError(f"the {plan.runtime} runtime keeps {node}'s record on its own machine")
    return Sink(sink_dir(labdir.node_dir(plan, node) / "state"))


def run_sink(host: str, port: int, directory: Path) -> None:
    """Run a sink on this machine until interrupted (``mxlab sink serve``): a lab's
    external node pointing at it gets its mail kept in ``directory`` (0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = SinkNodeConfig(
        lab="",
        node="sink",
        fqdn=socket.getfqdn(),
        address=host,
        state_dir=str(directory),
        smtp_port=port,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, directory))
