"""What every node kind provides; the defaults are those of our own node programs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.lab.ready import is_ready

if TYPE_CHECKING:
    import docker

    from mxlab.lab.image import Progress


class Kind:
    """How one kind of node is built, configured, started, probed and read."""

    name: str
    # a word of the local process's command line: `status` and `down` tell the node's
    # process from another that reused its pid by it
    process_marker: bytes = b"mxlab.nodes"
    runs: bool = True  # False: a server mxlab does not run (external): no start, no image

    def image(self, client: docker.DockerClient, progress: Progress) -> str:
        """The image its containers run, built on first use."""
        raise NotImplementedError

    def write_config(self, plan: LabPlan, node: NodePlan) -> None:
        """Files beside the node's config.json that its software reads (readable by a
        student in the lab directory); ours read config.json itself."""

    def local_problem(self, plan: LabPlan, node: NodePlan) -> str | None:
        """Why the node cannot run as a local process here (one line), or None."""
        return None

    def argv(self, plan: LabPlan, node: NodePlan) -> list[str]:
        """The command that runs the node in the foreground, in its node directory (a
        container's /mxlab or the lab directory's nodes/NAME)."""
        raise NotImplementedError

    def local_exec(self, pid: int | None, argv: list[str]) -> list[str]:
        """``argv`` as it runs beside the node's local process ``pid`` (None: stopped)."""
        return argv

    def is_ready(self, node: NodePlan, timeout: float) -> bool:
        """Every service of the node answers its protocol's greeting."""
        return is_ready(node, timeout)

    def queued(self, plan: LabPlan, node: NodePlan, message_id: str) -> bool:
        """The message waits in the node's queue (read from its files in the lab
        directory): scenarios' expect_queued and accounting."""
        return False

    def events(self, node: NodePlan, log: bytes) -> list[dict[str, Any]]:
        """The node's log as structured events (``ts``, ``node``, ``event``, fields such as
        ``message_id``, ``queue_id``, ``to``, ``hop``) for ``trace``."""
        return json_events(log)


def json_events(log: bytes) -> list[dict[str, Any]]:
    """Our nodes log one JSON object per event line."""
    lines = []
    for raw in log.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # not one of ours (a traceback, a library's warning)
        if isinstance(line, dict) and "event" in line:
            lines.append(line)
    return lines


def node_root(node: NodePlan) -> Path:
    """The node's directory as the node sees it (the planner puts state/ inside it)."""
    return Path(node.config.state_dir).parent
