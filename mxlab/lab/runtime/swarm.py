"""Swarm runtime: the docker runtime's containers, spread over the engines of a Swarm.

The lab network is an attachable overlay network (VXLAN) with the lab subnet. Swarm
services cannot have static addresses; standalone containers on an attachable overlay
can, so each node is the docker runtime's container, created through the API of the
engine it is placed on, and keeps the address the plan gave it: plan, zones and checks
are the same as on one engine.

An engine is reached at the URL in its swarm node label ``mxlab.engine``
(``docker node update --label-add mxlab.engine=ssh://root@host2 host2``); the manager
mxlab talks to needs none. The node image goes to each engine by ``docker save | docker
load`` over its API, or is pulled from ``$MXLAB_REGISTRY`` when that names one.

The host reaches the overlay through a small gateway container on this engine: on a
bridge to the host and on the overlay, masquerading, with a host route to the lab
subnet through it (the route goes with the bridge at ``down``).
"""

from __future__ import annotations

import io
import ipaddress
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import EndpointConfig

from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.image import ensure_image
from mxlab.lab.plan import CONTAINER_NODE_DIR, LabPlan, NodePlan
from mxlab.lab.runtime.base import Progress, SubnetTaken
from mxlab.lab.runtime.docker import (
    API_VERSION,
    DockerRuntime,
    container_name,
    network_name,
)
from mxlab.lab.topology import Topology

ENGINE_LABEL = "mxlab.engine"  # swarm node label: the URL of that node's engine API
ENGINE = "mxlab.engine"  # container label: the swarm node (hostname) it runs on
GATEWAY_ROLE = "gateway"
# Apart from the docker runtime's pool: the engine does not check an overlay's subnet
# against its bridges, so the two kinds of lab must not draw from one pool.
SWARM_POOL = ipaddress.IPv4Network("10.213.0.0/16")


@dataclass
class Engine:
    """One swarm node and, once needed, a client for its engine."""

    hostname: str
    labels: dict[str, str]
    url: str | None  # None: the engine mxlab talks to already
    client: docker.DockerClient | None = field(default=None, repr=False)

    def matches(self, placement: str) -> bool:
        """``placement`` is this node's hostname, or one of its labels as key=value."""
        key, sep, value = placement.partition("=")
        return self.labels.get(key) == value if sep else self.hostname == placement


def swarm_error(client: docker.DockerClient) -> str | None:
    """None when the engine is a Swarm manager, else what to do about it (one line)."""
    info = client.info().get("Swarm") or {}
    if info.get("LocalNodeState") != "active":
        return (
            "this Docker engine is not in a Swarm: run `docker swarm init` "
            "(or join it to a swarm as a manager), or use --runtime docker"
        )
    if not info.get("ControlAvailable"):
        return "this Docker engine is a Swarm worker: run mxlab against a manager"
    return None


def host_routes() -> set[str]:
    """The subnets this host routes somewhere (not the default route): an overlay there
    would be unreachable, or would hijack them."""
    found = set()
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            words = line.split()
            dest, mask = (int(w, 16).to_bytes(4, "little") for w in (words[1], words[7]))
            net = ipaddress.ip_network(f"{ipaddress.ip_address(dest)}/{ipaddress.ip_address(mask)}")
            if net.prefixlen:
                found.add(str(net))
    return found


def _dynamic(plan: LabPlan) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    net = ipaddress.ip_network(plan.subnet)
    tops: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(
        net.subnets(new_prefix=max(net.prefixlen, net.max_prefixlen - 5))
    )
    return tops[-1]


def gateway_name(lab: str) -> str:
    """Not a node's name: those are ``mxlab-<lab>_<node>``."""
    return f"mxlab-{lab}-gw"


def _node_tar(plan: LabPlan, node: str) -> bytes:
    """The node's lab directory as a tar, for an engine that cannot mount it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        root = labdir.node_dir(plan, node)
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buf.getvalue()


class SwarmRuntime(DockerRuntime):
    name = "swarm"
    subnet_pools = (SWARM_POOL,)

    def __init__(self) -> None:
        super().__init__()
        problem = swarm_error(self.client)
        if problem is not None:
            raise LabError(problem)
        self._engines: list[Engine] | None = None
        self._placed: dict[str, Engine] = {}

    def choose_subnet(self, topo: Topology, avoid: set[str] | None = None) -> str:
        return super().choose_subnet(topo, (avoid or set()) | host_routes())

    # -- engines and placement --------------------------------------------------------
    def engines(self) -> list[Engine]:
        """The swarm's ready, active nodes, by hostname."""
        if self._engines is None:
            me = self.client.info()["Swarm"]["NodeID"]
            found = []
            for n in self.client.nodes.list():
                spec, status = n.attrs["Spec"], n.attrs.get("Status") or {}
                if status.get("State") != "ready" or spec.get("Availability") != "active":
                    continue
                labels = spec.get("Labels") or {}
                url = labels.get(ENGINE_LABEL)
                engine = Engine(n.attrs["Description"]["Hostname"], labels, url)
                if url is None and n.id == me:
                    engine.client = self.client
                found.append(engine)
            self._engines = sorted(found, key=lambda e: e.hostname)
        return self._engines

    def _client(self, engine: Engine) -> docker.DockerClient:
        if engine.client is None:
            if engine.url is None:
                raise LabError(
                    f"swarm node {engine.hostname}: mxlab cannot reach its engine; label it "
                    f"(docker node update --label-add {ENGINE_LABEL}=ssh://USER@HOST "
                    f"{engine.hostname}) or drain it"
                )
            engine.client = docker.DockerClient(
                base_url=engine.url, timeout=120, use_ssh_client=engine.url.startswith("ssh://")
            )
        return engine.client

    def place(self, plan: LabPlan) -> dict[str, Engine]:
        """Each node on the least loaded engine its placement allows (round-robin)."""
        engines = self.engines()
        load = {e.hostname: 0 for e in engines}
        placed = {}
        for node in plan.start_order():
            fits = [e for e in engines if node.placement is None or e.matches(node.placement)]
            if not fits:
                have = ", ".join(e.hostname for e in engines)
                raise LabError(
                    f"node {node.name}: placement {node.placement!r} matches no ready swarm "
                    f"node (have: {have}; label one with docker node update --label-add)"
                )
            engine = min(fits, key=lambda e: load[e.hostname])
            load[engine.hostname] += 1
            placed[node.name] = engine
        return placed

    def _local(self, engine: Engine) -> bool:
        """The engine mxlab talks to, on this host: it can mount the lab directory."""
        return engine.client is self.client

    # -- the docker runtime's hooks -----------------------------------------------------
    def _image(self, plan: LabPlan, progress: Progress) -> str:
        """Placed first, so a bad placement fails before anything is made; then the node
        image on every engine that lacks this build."""
        self._placed = self.place(plan)
        image = ensure_image(self.client, progress=progress)
        self._ship(image, list(self._placed.values()), progress)
        return image

    def _kind_images(self, plan: LabPlan, image: str, progress: Progress) -> dict[str, str]:
        """Other kinds' images (Postfix, Dovecot...) go to the engines of their nodes too."""
        images = super()._kind_images(plan, image, progress)
        for kind, tag in images.items():
            if tag != image:
                engines = [e for n, e in self._placed.items() if plan.nodes[n].kind == kind]
                self._ship(tag, engines, progress)
        return images

    def _ship(self, image: str, engines: list[Engine], progress: Progress) -> None:
        """``image`` onto each of ``engines`` that lacks this build: pulled from
        ``$MXLAB_REGISTRY`` where it names one (pushed there once), else ``docker save |
        docker load`` over the engine's API."""
        want = self.client.images.get(image)
        registry = os.environ.get("MXLAB_REGISTRY")
        name, _, tag = image.rpartition(":")
        repo = f"{registry}/{name}"
        pushed = False
        for engine in {e.hostname: e for e in engines}.values():
            client = self._client(engine)
            if client is self.client:
                continue
            try:
                if client.images.get(image).id == want.id:
                    continue
            except docker.errors.ImageNotFound:
                pass
            if registry:
                if not pushed:
                    want.tag(repo, tag)
                    self.client.images.push(repo, tag)
                    pushed = True
                progress(f"pulling {image} from {registry} on {engine.hostname}")
                client.images.pull(repo, tag).tag(name, tag)
            else:
                progress(f"copying {image} to {engine.hostname} (docker save | docker load)")
                client.images.load(want.save(named=True))

    def _network_options(self) -> dict[str, Any]:
        return {"driver": "overlay", "attachable": True, "scope": "swarm"}

    def _ip_range(self, plan: LabPlan) -> str:
        """The top of the subnet: each engine takes an address of its own on an overlay
        (its load balancer's), the first free one in this range, never a node's."""
        top = _dynamic(plan)
        crowded = [n.name for n in plan.nodes.values() if ipaddress.ip_address(n.address) in top]
        if crowded:
            raise LabError(f"too many nodes for one swarm lab: {', '.join(crowded)} fall in {top}")
        return str(top)

    def _engine(self, plan: LabPlan, node: NodePlan) -> docker.DockerClient:
        return self._client(self._placed[node.name])

    def _volumes(self, plan: LabPlan, node: NodePlan, image: str) -> dict[str, dict[str, str]]:
        local = self._local(self._placed[node.name])
        return super()._volumes(plan, node, image) if local else {}

    def _labels(self, plan: LabPlan, node: NodePlan | None = None) -> dict[str, str]:
        labels = super()._labels(plan, node)
        if node is not None and node.name in self._placed:
            labels[ENGINE] = self._placed[node.name].hostname
        return labels

    def _create(self, plan: LabPlan, node: NodePlan, image: str, dns: str) -> Container:
        """The docker runtime's container; on an engine that cannot mount the lab
        directory, the directory is copied in before it starts."""
        c = super()._create(plan, node, image, dns)
        if not self._local(self._placed[node.name]):
            c.put_archive(CONTAINER_NODE_DIR, _node_tar(plan, node.name))
        return c

    def _after_network(self, plan: LabPlan, image: str, progress: Progress) -> None:
        """The gateway: the host's way onto the overlay (see the module's docstring)."""
        subnet = ipaddress.ip_network(plan.subnet)
        for other, net in self._used_subnets(plan.lab).items():  # all but the lab's own
            if net.version == 4 and net.overlaps(subnet):
                raise SubnetTaken(f"{plan.subnet}: docker network {other} took it meanwhile")
        address = str(list(subnet.hosts())[-1])  # in the range no node is in
        labels = super()._labels(plan) | {"mxlab.role": GATEWAY_ROLE}
        bridge = self.client.networks.create(gateway_name(plan.lab), labels=labels)
        nat = (
            "nft add table ip nat && "
            "nft 'add chain ip nat post { type nat hook postrouting priority 100 ; }' && "
            f"nft add rule ip nat post ip daddr {subnet} masquerade && exec sleep infinity"
        )
        # On the overlay from the start: an address asked for at `connect` is given
        # locally, but the swarm's allocator hands the attachment the first free one.
        overlay = network_name(plan.lab)
        gw = self.client.containers.create(
            image, ["sh", "-c", nat], name=gateway_name(plan.lab), labels=labels,
            network=overlay, cap_add=["NET_ADMIN"], sysctls={"net.ipv4.ip_forward": "1"},
            networking_config={overlay: EndpointConfig(API_VERSION, ipv4_address=address)},
            detach=True,
        )  # fmt: skip
        bridge.connect(gw)
        gw.start()
        gw.reload()
        via = gw.attrs["NetworkSettings"]["Networks"][bridge.name]["IPAddress"]
        try:
            self.client.containers.run(
                image, ["ip", "route", "add", str(subnet), "via", via], network_mode="host",
                cap_add=["NET_ADMIN"], remove=True, labels=labels,
            )  # fmt: skip
        except docker.errors.ContainerError:  # never replace a route another network needs
            raise SubnetTaken(f"{plan.subnet}: this host routes it elsewhere already") from None
        progress(f"overlay {plan.subnet} reachable from this host through {via}")

    # -- across engines -----------------------------------------------------------------
    def _reachable(self) -> list[docker.DockerClient]:
        """This engine first, then every other one mxlab can reach."""
        others = [e for e in self.engines() if e.client is not self.client and e.url]
        return [self.client, *(self._client(e) for e in others)]

    def _containers(self, lab: str) -> list[Container]:
        """Once each, though two engine URLs may name one engine."""
        found = {
            c.id: c
            for client in self._reachable()
            for c in client.containers.list(all=True, filters=self._mine(lab))
        }
        return list(found.values())

    def _find(self, lab: str, node: str) -> Container | None:
        for client in self._reachable():
            try:
                return client.containers.get(container_name(lab, node))
            except docker.errors.NotFound:
                continue
        return None
