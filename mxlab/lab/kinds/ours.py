"""Our own node programs: ``python -m mxlab.nodes ROLE --config config.json``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mxlab.lab import labdir
from mxlab.lab.kinds.base import Kind
from mxlab.lab.plan import LabPlan, NodePlan

if TYPE_CHECKING:  # the docker SDK costs ~0.3 s to import: local labs never load it
    import docker

    from mxlab.lab.image import Progress


class OurKind(Kind):
    def __init__(self, name: str) -> None:
        self.name = name

    def image(self, client: docker.DockerClient, progress: Progress) -> str:
        from mxlab.lab.image import ensure_image

        return ensure_image(client, progress=progress)

    def queued(self, plan: LabPlan, node: NodePlan, message_id: str) -> bool:
        """Incoming, active, deferred or held at our relay."""
        from mxlab.nodes.relay.queue_admin import read_queue

        state = labdir.node_dir(plan, node.name) / "state"
        return any(env.message_id == message_id for env in read_queue(state))

    def argv(self, plan: LabPlan, node: NodePlan) -> list[str]:
        python = sys.executable if plan.runtime == "local" else "python3"  # the image's
        return [python, "-m", "mxlab.nodes", node.role, "--config", "config.json"]


DNS = OurKind("dns")
RELAY = OurKind("relay")
STORE = OurKind("store")
