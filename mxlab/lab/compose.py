"""A lab as a compose file: ``docker compose up`` runs the same nodes, with the same
configs, addresses and network, without mxlab; ``swarm`` gives a stack file for
``docker stack deploy``.

The export is a self-contained folder: the compose file beside each node's directory
(config, TLS, an empty state), private like a lab directory. Nodes start the way every
runtime starts them: the command and image their kind gives (our node programs:
``python3 -m mxlab.nodes ROLE --config config.json``; Postfix, Dovecot, NSD, unbound:
the Debian image, built on first use). External nodes are not run. A stack runs our
node programs only: other kinds read files beside config.json that swarm configs
would have to carry one by one.

Swarm services cannot be given a static address (the engine ignores ``ipv4_address``
in a stack), so in a stack each node adds its planned address to its own interface
before it starts; the overlay's subnet is the lab's /24 and the /24 below it, which is
where the engine's own addresses for the tasks come from (the lowest free first).
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

import yaml

from mxlab.lab import kinds, labdir
from mxlab.lab.errors import LabError
from mxlab.lab.image import IMAGE
from mxlab.lab.kinds.ours import OurKind
from mxlab.lab.plan import CONTAINER_NODE_DIR, START_ORDER, LabPlan, NodePlan, make_plan
from mxlab.lab.topology import load_topology

COMPOSE_FILE = "docker-compose.yml"
STACK_FILE = "stack.yml"
NETWORK = "lab"
DEFAULT_SUBNET = "172.30.255.0/24"  # the top of the docker runtime's pool: labs take the bottom
STACK_SUBNET = "10.213.255.0/24"  # an odd /24: the /24 below it holds the tasks' own addresses


def export(source: str, out_dir: Path, swarm: bool = False) -> Path:
    """``source``: a running docker or swarm lab's name, or a topology file. Writes
    ``out_dir`` and returns the compose (or stack) file in it."""
    if Path(source).is_file():
        topo = load_topology(source)
        subnet = topo.settings.docker_subnet or (STACK_SUBNET if swarm else DEFAULT_SUBNET)
        plan = make_plan(topo, runtime="docker", lab_dir=out_dir.resolve(), subnet=subnet)
        labdir.write_plan(plan)
    else:
        plan = labdir.read_plan(source)
        if plan.runtime not in ("docker", "swarm"):
            raise LabError(
                f"lab {source} runs on the {plan.runtime} runtime, whose configs name host "
                "paths: export its topology file instead (mxlab export compose FILE)"
            )
        plan = _copy_lab(plan, out_dir)
    doc = stack(plan) if swarm else compose(plan, _images(plan))
    path = out_dir / (STACK_FILE if swarm else COMPOSE_FILE)
    with labdir.private():
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _copy_lab(plan: LabPlan, out_dir: Path) -> LabPlan:
    """The lab's folder as planned (CA, zones, configs, TLS, secrets), without its nodes'
    state and logs; the copy's plan names the new folder (so `mxlab check` reads it)."""
    with labdir.private():
        skip = shutil.ignore_patterns("state", "node.log", "pid", "*.lock")
        shutil.copytree(plan.lab_dir, out_dir, ignore=skip, dirs_exist_ok=True)
        copy = plan.model_copy(update={"lab_dir": str(out_dir.resolve())})
        for name in plan.nodes:
            labdir.node_dir(copy, name).joinpath("state").mkdir(exist_ok=True)
        (out_dir / "plan.json").write_text(copy.model_dump_json(indent=2))
    return copy


def _argv(role: str) -> list[str]:
    return ["python3", "-m", "mxlab.nodes", role, "--config", f"{CONTAINER_NODE_DIR}/config.json"]


def _run(plan: LabPlan) -> list[NodePlan]:
    """The nodes a container runs for, in start order (external ones run elsewhere)."""
    return [n for n in plan.start_order() if kinds.get(n.kind).runs]


def _images(plan: LabPlan) -> dict[str, str]:
    """Each kind's image: ours the node image, others theirs (built here on first use,
    as `up` would)."""
    others = _other_kinds(plan)
    if not others:
        return {}  # a lab of our own nodes exports without a Docker engine
    import docker

    client = docker.from_env()
    return {kind: kinds.get(kind).image(client, lambda _line: None) for kind in others}


def _other_kinds(plan: LabPlan) -> list[str]:
    """The kinds run from other software than our node programs (Postfix, Dovecot...)."""
    return sorted({n.kind for n in _run(plan) if not isinstance(kinds.get(n.kind), OurKind)})


def _service(plan: LabPlan, name: str, image: str = IMAGE) -> dict[str, Any]:
    """What a node's container gets on every runtime (see runtime/docker.py)."""
    node = plan.nodes[name]
    host, _, domain = node.fqdn.partition(".")
    return {
        "image": image,
        "hostname": host,
        "domainname": domain,
        "dns": [plan.dns_node.address],
        "dns_search": [domain],
        "cap_add": ["NET_ADMIN"],  # tc netem for link faults; in a stack: its address
        "labels": {"mxlab.lab": plan.lab, "mxlab.node": name, "mxlab.role": node.role},
    }


def compose(plan: LabPlan, images: dict[str, str] | None = None) -> dict[str, Any]:
    """Compose file: static addresses, node folders bind-mounted, started in order;
    ``images`` names the image of each kind that is not ours."""
    services: dict[str, Any] = {}
    run = _run(plan)
    for node in run:
        before = START_ORDER[: START_ORDER.index(node.role)]
        image = (images or {}).get(node.kind, IMAGE)
        services[node.name] = _service(plan, node.name, image) | {
            "command": kinds.get(node.kind).argv(plan, node),
            "working_dir": CONTAINER_NODE_DIR,
            "volumes": [f"./nodes/{node.name}:{CONTAINER_NODE_DIR}"],
            "networks": {NETWORK: {"ipv4_address": node.address}},
            "depends_on": [n.name for n in run if n.role in before],
        }
    gateway = str(next(ipaddress.ip_network(plan.subnet).hosts()))
    return {
        "version": "3.8",
        "services": services,
        "networks": {
            NETWORK: {
                "name": f"mxlab-{plan.lab}",
                "driver": "bridge",
                "ipam": {"config": [{"subnet": plan.subnet, "gateway": gateway}]},
                "labels": {"mxlab.lab": plan.lab},
            }
        },
    }


def stack(plan: LabPlan) -> dict[str, Any]:
    """Stack file: configs and keys as swarm configs (they reach any engine), state in
    a volume, the planned address added by the node itself (see the module docstring)."""
    net = ipaddress.ip_network(plan.subnet)
    wide = net.supernet()
    if net.prefixlen != 24 or net.network_address == wide.network_address:
        raise LabError(
            f"a stack needs the lab on an odd /24 (the one below holds the tasks' own "
            f"addresses); {plan.subnet} is not: export the topology file, or pin "
            f"settings.docker_subnet to one such as {STACK_SUBNET}"
        )
    others = _other_kinds(plan)
    if others:
        raise LabError(
            f"a stack runs mxlab's own nodes only, not {', '.join(others)}: "
            "export a compose file (without --swarm), or use --runtime swarm"
        )
    services: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for node in _run(plan):
        files = {"config.json": "config.json"}
        if (labdir.node_dir(plan, node.name) / "tls").is_dir():
            files |= {f"tls/{f}": f"tls/{f}" for f in ("cert.pem", "key.pem", "ca.pem")}
        mounts = []
        for target, rel in files.items():
            key = f"{node.name}-{rel.replace('/', '-').replace('.', '-')}"
            configs[key] = {"file": f"./nodes/{node.name}/{rel}"}
            mounts.append(
                {"source": key, "target": f"{CONTAINER_NODE_DIR}/{target}", "mode": 0o600}
            )
        # The lab's interface: the one the route to the lab goes out of ("$$": a stack
        # file's "$" is the deploying shell's variable).
        start = (
            f"dev=$$(ip -o route get {node.address} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p') && "
            f"ip addr add {node.address}/{net.prefixlen} dev $$dev && "
            f"exec {' '.join(_argv(node.role))}"
        )
        services[node.name] = _service(plan, node.name) | {
            "command": ["sh", "-c", start],
            "configs": mounts,
            "volumes": [f"{node.name}-state:{CONTAINER_NODE_DIR}/state"],
            "networks": [NETWORK],
            "deploy": {
                "endpoint_mode": "dnsrr",  # no virtual address taken from the subnet
                "restart_policy": {"condition": "on-failure"},
                "labels": {"mxlab.lab": plan.lab},
            },
        }
        if node.placement:
            key, sep, value = node.placement.partition("=")
            rule = f"node.labels.{key}=={value}" if sep else f"node.hostname=={key}"
            services[node.name]["deploy"]["placement"] = {"constraints": [rule]}
    return {
        "version": "3.8",
        "services": services,
        "networks": {
            NETWORK: {
                "driver": "overlay",
                "attachable": True,
                "ipam": {"config": [{"subnet": str(wide)}]},
                "labels": {"mxlab.lab": plan.lab},
            }
        },
        "volumes": {f"{n}-state": {} for n in plan.nodes},
        "configs": configs,
    }
