"""Hosts runtime: nodes on machines from an Ansible inventory, deployed over SSH.

``mxlab up --runtime hosts --inventory FILE`` places each node on an inventory host
(round-robin over the group ``mxlab`` if there is one, else over every host; or where
its ``placement:`` says: a host, a group, or a host variable as key=value) and runs the
playbooks beside this module with ``ansible-playbook``: they ship the node package as a
wheel with its dependencies' wheels, install it into a venv on the host, copy each
node's directory (config, TLS), add the node's address to the host's interface and run
the node as a service (``hostctl.sh``: a transient systemd unit where systemd runs,
else a detached process with a pid file). Status, stop/start/kill, signals and logs go
through the same playbooks. One bundle per host and one task per action keep a
playbook run to a few SSH round trips.

Addresses: the lab subnet is the inventory's ``mxlab_subnet``, a free range of the
network the hosts (and this machine) share; each node's address is added to its host's
interface (``mxlab_interface``, else the default route's), so every node keeps the
address the plan gave it and this machine reaches it directly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import mxlab
from mxlab.lab import kinds, labdir
from mxlab.lab.errors import LabError
from mxlab.lab.image import _node_sources, _package_root, _pins, _wheelhouse
from mxlab.lab.kinds.ours import OurKind
from mxlab.lab.plan import HOSTS_ROOT, LabPlan
from mxlab.lab.ready import wait_ready
from mxlab.lab.runtime.base import NodeStatus, Progress, Runtime
from mxlab.lab.topology import Topology

PLAYBOOKS = Path(__file__).with_name("hosts_playbooks")
STATE = "hosts.json"  # in the lab directory: the inventory and each node's host
GROUP = "mxlab"  # the inventory group the lab spreads over, when there is one
READY_TIMEOUT = 60.0
NODE_DIST = "mxlab_node"  # the wheel of what a node runs (mxlab.nodes, mxlab.dns)


def node_wheel(dest: Path) -> Path:
    """The node package as a wheel: the sources the node image carries, requiring the
    host's pinned versions of their dependencies (PEP 427 layout, PEP 376 RECORD)."""
    version = mxlab.__version__
    dist = f"{NODE_DIST}-{version}.dist-info"
    root = _package_root().parent
    files = {str(p.relative_to(root)): p.read_bytes() for p in _node_sources()}
    requires = "".join(f"Requires-Dist: {pin}\n" for pin in _pins())
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: mxlab-node\nVersion: {version}\n{requires}"
    ).encode()
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: mxlab\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}\n")
    files[f"{dist}/RECORD"] = ("".join(record) + f"{dist}/RECORD,,\n").encode()
    path = dest / f"{NODE_DIST}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, data in files.items():
            whl.writestr(name, data)
    return path


def wheelhouse(progress: Progress) -> Path:
    """The node package and its dependencies as wheels, kept under MXLAB_HOME per
    content (node sources and pinned versions): hosts keep one venv per content too."""
    h = hashlib.sha256("\n".join(_pins()).encode())
    for path in _node_sources():
        h.update(path.read_bytes())
    key = h.hexdigest()[:16]
    folder = labdir.home() / "wheels" / key
    if not (folder / "KEY").exists():
        progress("building the node package's wheels")
        with labdir.private():
            folder.mkdir(parents=True, exist_ok=True)
            _wheelhouse(folder, _pins())
            node_wheel(folder)
            (folder / "KEY").write_text(key)
    return folder


def _ansible(tool: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an Ansible CLI (ansible-playbook, ansible-inventory) from this Python."""
    argv = [sys.executable, "-m", f"ansible.cli.{tool}", *args]
    full = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", **(env or {}))
    run = subprocess.run(argv, capture_output=True, text=True, env=full, timeout=900)
    if "No module named ansible" in run.stderr:
        raise LabError("the hosts runtime needs Ansible: pip install 'mxlab[ansible]'")
    if run.returncode != 0 and tool != "playbook":  # a playbook's failures are in its JSON
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["?"]
        raise LabError(f"ansible-{tool} {' '.join(args)}: {tail[0]}")
    return run.stdout


class HostsRuntime(Runtime):
    name = "hosts"

    def __init__(self, inventory: Path | None = None) -> None:
        self._inventory = inventory.resolve() if inventory else None
        self._hostvars: dict[str, dict[str, Any]] | None = None
        self._groups: dict[str, list[str]] = {}

    # -- inventory and placement --------------------------------------------------------
    def _need_inventory(self) -> Path:
        if self._inventory is None:
            raise LabError("--runtime hosts needs --inventory FILE (an Ansible inventory)")
        if not self._inventory.is_file():
            raise LabError(f"--inventory {self._inventory}: no such file")
        return self._inventory

    def _read_inventory(self) -> dict[str, dict[str, Any]]:
        """Host -> its variables, and the groups, as Ansible itself reads the file."""
        if self._hostvars is None:
            data = json.loads(_ansible("inventory", "-i", str(self._need_inventory()), "--list"))
            hostvars = data.get("_meta", {}).get("hostvars", {})  # hosts with variables
            self._groups = {
                g: v.get("hosts", []) for g, v in data.items() if g != "_meta" and "hosts" in v
            }
            every = {h for hosts in self._groups.values() for h in hosts}
            self._hostvars = {h: hostvars.get(h, {}) for h in sorted(every)}
            for group, body in data.items():  # children's hosts count as the group's
                for child in body.get("children", []) if isinstance(body, dict) else []:
                    self._groups.setdefault(group, []).extend(self._groups.get(child, []))
            if not self._hostvars:
                raise LabError(f"inventory {self._inventory}: no hosts in it")
        return self._hostvars

    def choose_subnet(self, topo: Topology, avoid: set[str] | None = None) -> str:
        subnets = {str(v.get("mxlab_subnet")) for v in self._read_inventory().values()}
        if len(subnets) != 1 or "None" in subnets:
            raise LabError(
                f"inventory {self._inventory}: set mxlab_subnet once for all hosts (a free "
                "range of the network they share, e.g. mxlab_subnet: 192.168.50.0/24)"
            )
        return subnets.pop()

    def place(self, plan: LabPlan) -> dict[str, str]:
        """Each node on the least loaded host its placement allows (round-robin); the
        hosts run mxlab's own node programs (the wheel it ships), external nodes none."""
        others = sorted(
            {n.kind for n in plan.nodes.values() if not isinstance(kinds.get(n.kind), OurKind)}
            - {"external"}
        )
        if others:
            raise LabError(
                f"the hosts runtime runs mxlab's own nodes only, not {', '.join(others)}: "
                "use --runtime local or docker for them"
            )
        hostvars = self._read_inventory()
        pool = sorted(set(self._groups.get(GROUP) or hostvars))
        load = dict.fromkeys(pool, 0)
        placed = {}
        for node in (n for n in plan.start_order() if kinds.get(n.kind).runs):
            fits = pool
            if node.placement:
                key, sep, value = node.placement.partition("=")
                if sep:
                    fits = [h for h in pool if str(hostvars[h].get(key)) == value]
                else:
                    group = set(self._groups.get(key, []))
                    fits = [h for h in pool if h == key or h in group]
            if not fits:
                raise LabError(
                    f"node {node.name}: placement {node.placement!r} matches no host of "
                    f"inventory {self._inventory} (hosts: {', '.join(pool)})"
                )
            host = min(fits, key=lambda h: load[h])
            load[host] += 1
            placed[node.name] = host
        return placed

    def _state(self, lab: str) -> dict[str, Any]:
        try:
            return dict(json.loads((labdir.lab_dir(lab) / STATE).read_text()))
        except FileNotFoundError:
            raise LabError(f"lab {lab}: no {STATE} in its directory (was it started?)") from None

    # -- playbooks ------------------------------------------------------------------------
    def _play(
        self, lab: str, book: str, nodes: list[str] | None = None, **extra: Any
    ) -> dict[str, dict[str, Any]]:
        """Run a playbook for ``nodes`` (all by default) of the lab; each host's result
        of its last task. A failed task is one LabError line naming the host."""
        state = self._state(lab)
        placed: dict[str, str] = state["placed"]
        plan = labdir.read_plan(lab)
        by_host: dict[str, list[str]] = {}
        for name in nodes if nodes is not None else list(placed):
            n = plan.nodes[name]
            by_host.setdefault(placed[name], []).append(f"{name}:{n.role}:{n.address}")
        doc = {"lab": lab, "root": f"{HOSTS_ROOT}/{lab}", "nodes": by_host}
        doc |= {"hosts": sorted(by_host)} | extra
        with labdir.private(), tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"mxlab": doc}, f)
            f.flush()
            out = _ansible(
                "playbook", "-i", state["inventory"], "-e", f"@{f.name}", str(PLAYBOOKS / book),
                env={"ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_PIPELINING": "true"},
            )  # fmt: skip
        try:
            report = json.loads(out[out.index("{") :])
        except ValueError:
            raise LabError(f"ansible-playbook {book}: no report ({out.strip()[-200:]})") from None
        last: dict[str, dict[str, Any]] = {}
        for play in report.get("plays", []):
            for task in play.get("tasks", []):
                for host, res in task.get("hosts", {}).items():
                    if res.get("failed") or res.get("unreachable"):
                        why = res.get("stderr") or res.get("msg") or "failed"
                        name = task["task"]["name"]
                        raise LabError(f"{host}: {name}: {str(why).strip().splitlines()[-1]}")
                    last[host] = res
        return last

    # -- lifecycle --------------------------------------------------------------------------
    def up(self, plan: LabPlan, progress: Progress) -> None:
        placed = self.place(plan)
        with labdir.private():
            (Path(plan.lab_dir) / STATE).write_text(
                json.dumps({"inventory": str(self._need_inventory()), "placed": placed})
            )
        wheels = wheelhouse(progress)
        with tempfile.TemporaryDirectory(prefix="mxlab-bundles-") as bundles:
            for host in set(placed.values()):
                with tarfile.open(Path(bundles, f"{host}.tar"), "w") as tar:
                    tar.add(PLAYBOOKS / "hostctl.sh", "hostctl.sh")
                    tar.add(wheels, ".wheels")
                    for node in (n for n, h in placed.items() if h == host):
                        tar.add(labdir.node_dir(plan, node), node)
            progress(f"deploying over SSH to {', '.join(sorted(set(placed.values())))}")
            self._play(plan.lab, "deploy.yml", bundles=bundles)
        wait_ready(plan.start_order(), time.monotonic() + READY_TIMEOUT, lambda n: None)

    def down(self, lab: str) -> None:
        if (labdir.lab_dir(lab) / STATE).exists():
            self._play(lab, "control.yml", action="down")

    def status(self, lab: str) -> list[NodeStatus]:
        plan = labdir.read_plan(lab)
        placed = self._state(lab)["placed"]
        state = {}
        for res in self._play(lab, "control.yml", action="status").values():
            for line in res.get("stdout", "").splitlines():
                name, _, word = line.partition(" ")
                state[name] = word
        return [
            NodeStatus(n.name, n.role, n.address, state.get(n.name, "stopped"), placed[n.name])
            for n in plan.start_order()
        ]

    def start(self, plan: LabPlan, node: str) -> None:
        self._play(plan.lab, "control.yml", [node], action="start")
        wait_ready([plan.nodes[node]], time.monotonic() + READY_TIMEOUT, lambda n: None)

    def stop(self, plan: LabPlan, node: str) -> None:
        self._play(plan.lab, "control.yml", [node], action="stop")

    def kill(self, plan: LabPlan, node: str) -> None:
        self.signal(plan, node, signal.SIGKILL)

    def signal(self, plan: LabPlan, node: str, sig: signal.Signals) -> None:
        self._play(plan.lab, "control.yml", [node], action="signal", arg=sig.name[3:])

    def _one(self, plan: LabPlan, node: str, action: str, arg: str = "-") -> dict[str, Any]:
        results = self._play(plan.lab, "control.yml", [node], action=action, arg=arg)
        return next(iter(results.values()))

    def exec(self, plan: LabPlan, node: str, argv: list[str]) -> int:
        result = self._one(plan, node, "exec", shlex.join(argv))
        sys.stdout.write(result.get("stdout", "") + "\n")
        sys.stderr.write(result.get("stderr", ""))
        return int(result.get("rc", 0))

    def log_bytes(self, plan: LabPlan, node: str) -> bytes:
        text = str(self._one(plan, node, "log").get("stdout", ""))
        return (text + "\n").encode() if text else b""

    def logs(self, plan: LabPlan, node: str, follow: bool) -> None:
        """The log so far (``follow`` polls the host every two seconds)."""
        seen = 0
        while True:
            data = self.log_bytes(plan, node)
            sys.stdout.buffer.write(data[seen:])
            sys.stdout.buffer.flush()
            seen = len(data)
            if not follow:
                return
            time.sleep(2)
