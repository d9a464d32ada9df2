"""The one interface every runtime implements; the CLI and checks use only this."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan
from mxlab.lab.topology import Topology

Progress = Callable[[str], None]


class SubnetTaken(LabError):
    """Another lab took the chosen subnet between choosing and creating: plan again."""


@dataclass(frozen=True)
class NodeStatus:
    node: str
    role: str
    address: str
    state: str  # "running", "stopped", "exited", ...
    detail: str = ""  # pid or container id


class Runtime(ABC):
    name: str

    def choose_subnet(self, topo: Topology, avoid: set[str] | None = None) -> str | None:
        """The subnet for a new lab, not one of ``avoid``; None lets the planner use the
        topology's default."""
        return None

    def prepare(self, topo: Topology) -> None:
        """Before the lab is planned: start what needs no plan and is slow to start (the
        local runtime's spawners import meanwhile). Nothing by default."""
        return None

    @abstractmethod
    def up(self, plan: LabPlan, progress: Progress) -> None:
        """Create networks and start every node in dependency order until all are ready."""

    @abstractmethod
    def down(self, lab: str) -> None:
        """Remove every process, container and network of the lab."""

    @abstractmethod
    def status(self, lab: str) -> list[NodeStatus]: ...

    @abstractmethod
    def start(self, plan: LabPlan, node: str) -> None:
        """Start a stopped node and wait until it is ready."""

    @abstractmethod
    def stop(self, plan: LabPlan, node: str) -> None:
        """Stop a node gracefully (SIGTERM)."""

    @abstractmethod
    def kill(self, plan: LabPlan, node: str) -> None:
        """SIGKILL a node: what it acknowledged must survive."""

    def restart(self, plan: LabPlan, node: str) -> None:
        self.stop(plan, node)
        self.start(plan, node)

    @abstractmethod
    def signal(self, plan: LabPlan, node: str, sig: signal.Signals) -> None:
        """Deliver a signal to the node program (SIGHUP: reread fault files)."""

    def link(
        self, plan: LabPlan, node: str, action: str, spec: dict[str, str] | None = None
    ) -> None:
        """Cut, restore, impair (tc netem) or clear a node's network link."""
        raise LabError(f"{action} {node}: link faults need the docker runtime (--runtime docker)")

    @abstractmethod
    def exec(self, plan: LabPlan, node: str, argv: list[str]) -> int: ...

    @abstractmethod
    def log_bytes(self, plan: LabPlan, node: str) -> bytes:
        """The node's whole log so far."""

    @abstractmethod
    def logs(self, plan: LabPlan, node: str, follow: bool) -> None:
        """Copy the node's log to stdout (and keep following with ``follow``)."""
