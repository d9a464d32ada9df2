"""Docker runtime: each node its own container on a lab bridge network with static IPs.

Everything carries the labels ``mxlab.lab``/``mxlab.node``/``mxlab.role``, so ``down``,
``status`` and ``gc`` work from the engine alone, without the topology or lab directory;
and ``mxlab.home``, the MXLAB_HOME that made it: on a shared engine nobody's ``status``,
``down`` or ``gc`` touches another user's labs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import EndpointConfig, IPAMConfig, IPAMPool

from mxlab.lab import kinds, labdir
from mxlab.lab.errors import LabError
from mxlab.lab.image import RUNTIME_DIR, ensure_image, runtime_volume
from mxlab.lab.kinds.ours import OurKind
from mxlab.lab.plan import CONTAINER_NODE_DIR, START_ORDER, LabPlan, NodePlan
from mxlab.lab.ready import wait_ready
from mxlab.lab.runtime import netem
from mxlab.lab.runtime.base import NodeStatus, Progress, Runtime, SubnetTaken
from mxlab.lab.runtime.routes import host_routes
from mxlab.lab.topology import Topology

READY_TIMEOUT = 60.0
NETWORK_RELEASE_TIMEOUT = 30.0  # for the engine to let go of removed containers' endpoints
SUBNET_POOL = ipaddress.IPv4Network("172.30.0.0/16")  # carved into /24s, one per lab
# The engine hands whole /16s of 172.17-172.31 to networks made without a subnet, in turn
# (compose projects, `docker network create`): once 172.30.0.0/16 is one of those, labs
# spill into the rest of 172.16.0.0/12 instead of failing.
SPILL_POOL = ipaddress.IPv4Network("172.16.0.0/12")
LAB = "mxlab.lab"
HOME = "mxlab.home"
API_VERSION = "1.41"  # Docker 20.10, the oldest engine we meet


class _NoNetem(Exception):
    """The kernel has no sch_netem; impairments fall back to tbf and nftables."""


def engine_error() -> str | None:
    """None when a Docker engine answers, else why not (one line)."""
    try:
        docker.from_env(timeout=5).ping()
    except Exception as exc:  # the SDK raises many kinds when no engine is there
        return f"no Docker engine answers ({type(exc).__name__})"
    return None


def container_name(lab: str, node: str) -> str:
    """Lab and node names are [a-z0-9-]: '_' keeps lab ``a`` node ``b-c`` apart from lab
    ``a-b`` node ``c``."""
    return f"mxlab-{lab}_{node}"


def network_name(lab: str) -> str:
    return f"mxlab-{lab}"


def build_image(force: bool, progress: Progress) -> str:
    """The node image, with a long engine timeout: a first build takes a minute or two."""
    return ensure_image(docker.from_env(timeout=900), force=force, progress=progress)


def _home() -> str:
    return str(labdir.home().resolve())


def remove_network(net: Network) -> None:
    """Container removal can return before the engine has released the container's
    endpoint ("has active endpoints", under load): disconnect what is left and retry,
    until a deadline. Docker 20.10 can also lose count of a network's endpoints for good
    (moby#43286: it lists none, yet refuses); then only restarting the engine frees it."""
    deadline = time.monotonic() + NETWORK_RELEASE_TIMEOUT
    while True:
        try:
            net.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc.explanation):
                raise
            if time.monotonic() > deadline:
                raise LabError(
                    f"docker network {net.name} is still held by the engine with no "
                    "container on it (moby#43286): restart the Docker engine to free it"
                ) from None
        net.reload()
        for endpoint in net.attrs.get("Containers") or {}:
            with contextlib.suppress(docker.errors.APIError):
                net.disconnect(endpoint, force=True)
        time.sleep(0.2)


class DockerRuntime(Runtime):
    name = "docker"
    subnet_pools: tuple[ipaddress.IPv4Network, ...] = (SUBNET_POOL, SPILL_POOL)

    def __init__(self) -> None:
        self.client = docker.from_env(timeout=120)
        self._runtimes: dict[str, str] = {}  # node image -> its runtime volume

    # -- networks -----------------------------------------------------------------
    def _used_subnets(self, lab: str) -> dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Every docker network's subnet but the one `up` of ``lab`` will remove first
        (this home's crashed run of it), so a leftover never pushes the lab elsewhere."""
        used = {}
        for net in self.client.networks.list():
            if self._our_leftover(net, lab):
                continue
            for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                if cfg.get("Subnet"):
                    used[net.name] = ipaddress.ip_network(cfg["Subnet"], strict=False)
        return used

    def choose_subnet(self, topo: Topology, avoid: set[str] | None = None) -> str:
        """A /24 no existing docker network and no route of the host overlaps; a
        pinned one is checked, not moved."""
        used = self._used_subnets(topo.name)
        used |= {f"tried {s}": ipaddress.ip_network(s) for s in avoid or ()}
        routes = host_routes()
        if topo.settings.docker_subnet:
            want = ipaddress.ip_network(topo.settings.docker_subnet)
            for name, net in used.items():
                if net.version == want.version and net.overlaps(want):
                    raise LabError(
                        f"settings.docker_subnet {want} overlaps docker network {name!r} "
                        f"({net}): pick another subnet or remove that network"
                    )
            for name, net in routes.items():
                if want.version == 4 and net.overlaps(want):
                    raise LabError(
                        f"settings.docker_subnet {want} overlaps the host's route {name}: "
                        "the lab would hide those addresses; pick another subnet"
                    )
            return str(want)
        taken = [n for n in used.values() if n.version == 4] + list(routes.values())
        for pool in self.subnet_pools:
            for candidate in pool.subnets(new_prefix=24):
                if not any(n.overlaps(candidate) for n in taken):
                    return str(candidate)
        pools = " or ".join(str(p) for p in self.subnet_pools)
        raise LabError(f"no free /24 left in {pools} (run mxlab gc, or pin a subnet)")

    def _labels(self, plan: LabPlan, node: NodePlan | None = None) -> dict[str, str]:
        labels = {LAB: plan.lab, HOME: _home()}
        if node is not None:
            labels |= {"mxlab.node": node.name, "mxlab.role": node.role}
        return labels

    # -- lifecycle ----------------------------------------------------------------
    def up(self, plan: LabPlan, progress: Progress) -> None:
        if self._containers(plan.lab):
            raise LabError(f"lab {plan.lab!r} already has containers (mxlab down {plan.lab})")
        self._refuse_name_clash(plan.lab)
        image = self._image(plan, progress)
        self._runtimes[image] = runtime_volume(self.client, image)
        gateway = str(next(ipaddress.ip_network(plan.subnet).hosts()))
        try:
            self.client.networks.create(
                network_name(plan.lab),
                ipam=IPAMConfig(
                    pool_configs=[
                        IPAMPool(subnet=plan.subnet, gateway=gateway, iprange=self._ip_range(plan))
                    ]
                ),
                labels=self._labels(plan),
                **self._network_options(),
            )
        except docker.errors.APIError as exc:
            if "overlap" in str(exc.explanation):
                raise SubnetTaken(f"{plan.subnet}: {exc.explanation}") from None
            raise LabError(f"cannot create network {plan.subnet}: {exc.explanation}") from None
        self._after_network(plan, image, progress)
        dns = plan.dns_node
        images = self._kind_images(plan, image, progress)
        ours = [n for n in plan.start_order() if kinds.get(n.kind).runs]  # not external ones
        with ThreadPoolExecutor(max_workers=10) as pool:
            # Creating costs little and needs no order: create all now, so each tier
            # below waits only for its containers to start and its protocols to answer.
            made = dict(
                zip(
                    [n.name for n in ours],
                    pool.map(lambda n: self._create(plan, n, images[n.kind], dns.address), ours),
                    strict=True,
                )
            )  # fmt: skip
            # Our own node programs need no other node to start (they resolve and relay
            # only when mail comes): all start at once, and the tiers below only wait
            # for them. Other software starts after the tiers before it answer.
            early = {n.name for n in ours if isinstance(kinds.get(n.kind), OurKind)}
            list(pool.map(lambda n: made[n.name].start(), [n for n in ours if n.name in early]))
            for role in START_ORDER:
                group = [n for n in ours if n.role == role]
                if not group:
                    continue
                progress(f"starting {role}: {', '.join(n.name for n in group)}")
                late = [n for n in group if n.name not in early]
                list(pool.map(lambda n: made[n.name].start(), late))
                wait_ready(group, time.monotonic() + READY_TIMEOUT, self._why_dead(plan))

    def _kind_images(self, plan: LabPlan, image: str, progress: Progress) -> dict[str, str]:
        """Each kind's image: ours run ``image``, real software its own (built on first
        use from the debootstrap base and Debian's packages)."""
        out = {}
        for node in plan.nodes.values():
            kind = kinds.get(node.kind)
            if kind.runs and node.kind not in out:
                ours = isinstance(kind, OurKind)
                out[node.kind] = image if ours else kind.image(self.client, progress)
        return out

    # -- what the swarm runtime changes -------------------------------------------
    def _image(self, plan: LabPlan, progress: Progress) -> str:
        """The node image, ready on every engine the lab's containers run on."""
        return ensure_image(self.client, progress=progress)

    def _network_options(self) -> dict[str, Any]:
        """The lab network: a bridge on this engine."""
        return {"driver": "bridge"}

    def _ip_range(self, plan: LabPlan) -> str | None:
        """Where the engine may give out addresses of its own (None: anywhere)."""
        return None

    def _refuse_name_clash(self, lab: str) -> None:
        """The engine lets two networks share a name, and then refuses to start any
        container on either ("ambiguous"): a network left by this home's crashed run is
        removed, another home's is named in one line."""
        for net in self.client.networks.list(names=[network_name(lab)]):
            if net.name != network_name(lab):  # the filter matches substrings
                continue
            if self._our_leftover(net, lab):
                remove_network(net)
                continue
            raise LabError(
                f"docker network {net.name} exists already (another MXLAB_HOME's lab "
                f"{lab!r}, or not mxlab's): mxlab down {lab} there, or docker network rm "
                f"{net.name}"
            )

    @staticmethod
    def _our_leftover(net: Network, lab: str) -> bool:
        """``lab``'s network from this home: `up` finds no container of the lab before
        it looks, so such a network is a crashed run's, and is removed."""
        labels = net.attrs.get("Labels") or {}
        return net.name == network_name(lab) and labels.get(HOME) == _home()

    def _after_network(self, plan: LabPlan, image: str, progress: Progress) -> None:
        """Once the lab network exists, before any node is created."""

    def _engine(self, plan: LabPlan, node: NodePlan) -> docker.DockerClient:
        """The engine a node's container runs on."""
        return self.client

    def _volumes(self, plan: LabPlan, node: NodePlan, image: str) -> dict[str, dict[str, str]]:
        """The node's lab directory, mounted from this host; and for our node image, its
        runtime volume (see mxlab.lab.image.runtime_volume; never filled here: a volume
        removed meanwhile fails the node at once instead of being half-filled by a race)."""
        out = {str(labdir.node_dir(plan, node.name)): {"bind": CONTAINER_NODE_DIR, "mode": "rw"}}
        if image in self._runtimes:
            out[self._runtimes[image]] = {"bind": RUNTIME_DIR, "mode": "ro,nocopy"}
        return out

    def _find(self, lab: str, node: str) -> Container | None:
        try:
            return self.client.containers.get(container_name(lab, node))
        except docker.errors.NotFound:
            return None

    def _create(self, plan: LabPlan, node: NodePlan, image: str, dns: str) -> Container:
        host, _, domain = node.fqdn.partition(".")
        return self._engine(plan, node).containers.create(
            image,
            kinds.get(node.kind).argv(plan, node),
            working_dir=CONTAINER_NODE_DIR,
            name=container_name(plan.lab, node.name),
            hostname=host,
            domainname=domain,
            labels=self._labels(plan, node),
            dns=[dns],
            dns_search=[domain],
            volumes=self._volumes(plan, node, image),
            cap_add=["NET_ADMIN"],  # tc netem for link faults
            network=network_name(plan.lab),
            networking_config={
                network_name(plan.lab): EndpointConfig(API_VERSION, ipv4_address=node.address)
            },
            detach=True,
        )  # fmt: skip

    def _why_dead(self, plan: LabPlan) -> Callable[[NodePlan], str | None]:
        def check(node: NodePlan) -> str | None:
            c = self._find(plan.lab, node.name)
            if c is None:
                return "container is gone"
            if c.status in ("created", "running"):
                return None
            tail = c.logs(tail=1).decode(errors="replace").strip()
            return f"{c.status}: {tail or 'no output'}"

        return check

    @staticmethod
    def _mine(lab: str | None = None) -> dict[str, list[str]]:
        """The label filter for this MXLAB_HOME's labs (one lab, or all)."""
        return {"label": [f"{HOME}={_home()}", f"{LAB}={lab}" if lab else LAB]}

    def _containers(self, lab: str) -> list[Container]:
        return self.client.containers.list(all=True, filters=self._mine(lab))

    def down(self, lab: str) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda c: c.remove(force=True), self._containers(lab)))
        for net in self.client.networks.list(filters=self._mine(lab)):
            remove_network(net)

    def status(self, lab: str) -> list[NodeStatus]:
        out = []
        for c in self._containers(lab):
            if "mxlab.node" not in c.labels:  # a helper, such as a swarm lab's gateway
                continue
            nets = c.attrs["NetworkSettings"]["Networks"]
            addr = next((n.get("IPAddress") for n in nets.values()), "") or ""
            out.append(
                NodeStatus(c.labels["mxlab.node"], c.labels.get("mxlab.role", "?"),
                           addr, c.status, c.short_id)
            )  # fmt: skip
        if (labdir.lab_dir(lab) / "plan.json").exists():  # servers it does not run
            plan = labdir.read_plan(lab)
            out += [
                NodeStatus(n.name, n.role, n.address, "external", "")
                for n in plan.nodes.values()
                if not kinds.get(n.kind).runs
            ]
        return sorted(out, key=lambda s: s.node)

    def labs(self) -> list[str]:
        """Every lab of this MXLAB_HOME with a labelled container or network."""
        flt = self._mine()
        found = {c.labels[LAB] for c in self.client.containers.list(all=True, filters=flt)}
        found |= {n.attrs["Labels"][LAB] for n in self.client.networks.list(filters=flt)}
        return sorted(found)

    def dead_labs(self) -> list[str]:
        """Labs whose containers are all gone or dead (what a crashed run leaves)."""
        return [
            lab
            for lab in self.labs()
            if all(
                c.status in ("exited", "dead", "created")
                for c in self._containers(lab)
                if "mxlab.node" in c.labels  # a swarm lab's gateway outlives its nodes
            )
        ]

    def _container(self, plan: LabPlan, node: str) -> Container:
        c = self._find(plan.lab, node)
        if c is None:
            raise LabError(f"no container for node {node} of lab {plan.lab}")
        return c

    def start(self, plan: LabPlan, node: str) -> None:
        self._container(plan, node).start()
        wait_ready([plan.nodes[node]], time.monotonic() + READY_TIMEOUT, self._why_dead(plan))

    def stop(self, plan: LabPlan, node: str) -> None:
        self._container(plan, node).stop(timeout=10)

    def kill(self, plan: LabPlan, node: str) -> None:
        c = self._container(plan, node)
        if c.status == "running":
            c.kill()

    def signal(self, plan: LabPlan, node: str, sig: signal.Signals) -> None:
        self._container(plan, node).kill(signal=sig.name)

    def link(
        self, plan: LabPlan, node: str, action: str, spec: dict[str, str] | None = None
    ) -> None:
        """cut/restore: leave and rejoin the lab network (same address); impair/clear:
        tc netem (or tbf and nftables) on the container's lab interface."""
        c = self._container(plan, node)
        net = c.client.networks.get(network_name(plan.lab))
        if action == "cut":
            net.disconnect(c)
        elif action == "restore":
            net.connect(c, ipv4_address=plan.nodes[node].address)
        else:  # impair or clear: both start from a clear link (clearing one is fine)
            dev = self._interface(c, plan.nodes[node].address)
            self._exec_all(c, node, netem.clear(dev), tolerate=netem.NOTHING_TO_CLEAR)
            if action == "impair":
                try:
                    self._exec_all(c, node, netem.netem(dev, spec or {}))
                except _NoNetem:
                    self._exec_all(c, node, netem.without_netem(dev, spec or {}))

    @staticmethod
    def _exec_all(
        c: Container, node: str, cmds: list[list[str]], tolerate: tuple[str, ...] = ()
    ) -> None:
        for argv in cmds:
            code, output = c.exec_run(argv)
            text = output.decode(errors="replace").strip()
            if code == 0 or any(t in text for t in tolerate):
                continue
            if netem.NO_NETEM in text and "netem" in argv:
                raise _NoNetem(text)
            raise LabError(f"{argv[0]} in {node}: {text}")

    @staticmethod
    def _interface(c: Container, address: str) -> str:
        """The lab interface: eth0 at first, another name after a cut and restore."""
        code, output = c.exec_run(["ip", "-o", "-4", "addr", "show"])
        for line in output.decode(errors="replace").splitlines():
            words = line.split()  # "7: eth1    inet 172.30.0.5/24 brd ..."
            if len(words) > 3 and words[3].split("/")[0] == address:
                return words[1].split("@")[0]
        raise LabError(f"no interface holds {address} in {c.name} (is its link cut?)")

    def log_bytes(self, plan: LabPlan, node: str) -> bytes:
        return self._container(plan, node).logs()

    def exec(self, plan: LabPlan, node: str, argv: list[str]) -> int:
        c = self._container(plan, node)
        api = c.client.api  # the engine the container runs on
        exec_id = api.exec_create(c.id, argv)["Id"]
        for chunk in api.exec_start(exec_id, stream=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return int(api.exec_inspect(exec_id)["ExitCode"] or 0)

    def logs(self, plan: LabPlan, node: str, follow: bool) -> None:
        c = self._container(plan, node)
        if follow:
            for chunk in c.logs(stream=True, follow=True):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        else:
            sys.stdout.buffer.write(self.log_bytes(plan, node))
