"""Local runtime: every node a child process on its own 127.x address. Needs only Python."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mxlab.lab import kinds, labdir
from mxlab.lab.errors import LabError
from mxlab.lab.kinds.ours import OurKind
from mxlab.lab.plan import START_ORDER, LabPlan, NodePlan
from mxlab.lab.ready import wait_ready
from mxlab.lab.runtime.base import NodeStatus, Progress, Runtime
from mxlab.lab.topology import Topology
from mxlab.nodes.__main__ import ROLES
from mxlab.nodes.host_signals import held

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _pid_file(plan: LabPlan, node: str) -> Path:
    return labdir.node_dir(plan, node) / "pid"


def _log_file(plan: LabPlan, node: str) -> Path:
    return labdir.node_dir(plan, node) / "node.log"


def _alive(pid: int) -> bool:
    """Some thread of the process still runs. Only when none does has the kernel closed its
    sockets: the main thread turns zombie before worker threads finish exiting, and an
    exiting process loses its command line before its files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # that thread just went
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            return True
    return False


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` now, also those that left its process group (Postfix's
    master does) or sit in a PID namespace of their own."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                children = [
                    int(c) for c in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
                ]
                found += children
                todo += children
    return found


def _running_pid(pid_file: Path | str, marker: bytes = b"mxlab.nodes") -> int | None:
    """The pid (in the file) if that process is alive and is a node (not a reused pid):
    its command line holds the kind's ``marker``."""
    try:
        pid = int(pid_file if isinstance(pid_file, str) else pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if marker in cmdline and _alive(pid) else None


def _node_pid(plan: LabPlan, node: str) -> int | None:
    """The running process of the node, found by its kind's marker."""
    marker = kinds.get(plan.nodes[node].kind).process_marker
    return _running_pid(_pid_file(plan, node), marker)


def _environ(pid: str) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)


def orphans() -> dict[str, list[int]]:
    """Node processes of this MXLAB_HOME whose lab directory is gone, by lab."""
    home = str(labdir.home()).encode()
    markers = {kinds.get(kind).process_marker for kind in kinds.MODULES}  # Postfix's too
    found: dict[str, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        env = _environ(pid)
        lab = env.get(b"MXLAB_LAB", b"").decode()
        if not lab or env.get(b"MXLAB_HOME") != home:
            continue
        if all(_running_pid(pid, marker) is None for marker in markers):
            continue
        if not (labdir.lab_dir(lab) / "plan.json").exists():
            found.setdefault(lab, []).append(int(pid))
    return found


def stop_pids(pids: list[int]) -> None:
    """SIGKILL each node's process group and wait until every thread is gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _check_free(node: NodePlan) -> None:
    """Fail with one line if another program holds one of the node's ports."""
    for service, port in node.ports.items():
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if service == "dns" else [])
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((node.address, port))
                except OSError as exc:
                    raise LabError(
                        f"{node.address}:{port} ({service} of {node.name}) is unavailable: "
                        f"{exc.strerror} (stop what holds it, or set settings.local_subnet)"
                    ) from None


def _node_env(lab: str) -> dict[str, str]:
    """MXLAB_LAB and MXLAB_HOME are the marker gc finds orphans by: a node whose lab
    directory is gone."""
    return dict(os.environ, PYTHONUNBUFFERED="1", MXLAB_LAB=lab, MXLAB_HOME=str(labdir.home()))


class _Forkers:
    """One ``python -m mxlab.nodes.spawn ROLE`` per role: each imports its role's modules
    once and forks a node per directory (mxlab.nodes.spawn); 236 fresh interpreters
    importing the same modules took most of a 100-domain lab's 42 s start."""

    def __init__(self, lab: str, roles: set[str]) -> None:
        self.lab = lab
        self.procs: dict[str, subprocess.Popen] = {}
        for role in sorted(roles):
            self._start(role)

    def _start(self, role: str) -> subprocess.Popen:
        with held():  # its nodes are born with the host's signals held (host_signals)
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "mxlab.nodes.spawn", role],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=_node_env(self.lab), text=True,
            )  # fmt: skip
        return self.procs[role]

    def fork(self, node_dirs: dict[str, list[Path]]) -> dict[str, list[int]]:
        """Each role's directories handed to its spawner first, so the spawners fork at
        the same time; then each role's pids, in its directories' order."""
        for role, dirs in node_dirs.items():
            if dirs:
                proc = self.procs.get(role) or self._start(role)
                assert proc.stdin is not None
                proc.stdin.write("".join(f"{d}\n" for d in dirs))
                proc.stdin.flush()
        return {role: self._pids(role, len(dirs)) for role, dirs in node_dirs.items()}

    def _pids(self, role: str, count: int) -> list[int]:
        if not count:
            return []
        proc = self.procs[role]
        assert proc.stdout is not None
        pids = [proc.stdout.readline().strip() for _ in range(count)]
        if not all(pid.isdigit() for pid in pids):
            proc.kill()
            _, err = proc.communicate()
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise LabError(f"cannot start the {role} nodes: {last}")
        return [int(pid) for pid in pids]

    def __enter__(self) -> _Forkers:
        return self

    def close(self) -> None:
        """No more nodes: each spawner exits (its nodes run on)."""
        for proc in self.procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
                proc.stdin = None  # communicate() then only reads and reaps

    def __exit__(self, *exc: object) -> None:
        self.close()
        for proc in self.procs.values():
            proc.communicate()


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self) -> None:
        # Children this process spawned: poll() tells "alive" even before the child's
        # execve, when /proc still shows the parent's command line.
        self._children: dict[str, subprocess.Popen] = {}
        self._warm: _Forkers | None = None  # started by prepare, for the next up

    def prepare(self, topo: Topology) -> None:
        """The spawners of our node programs, importing while the lab is planned."""
        if self._warm is not None:
            self._warm.__exit__()
        self._warm = _Forkers(topo.name, set(ROLES) & {s.kind for s in topo.nodes.values()})

    def up(self, plan: LabPlan, progress: Progress) -> None:
        ours = [n for n in plan.start_order() if kinds.get(n.kind).runs]  # not external ones
        for node in ours:
            problem = kinds.get(node.kind).local_problem(plan, node)
            if problem is not None:
                raise LabError(f"node {node.name} (kind {node.kind}): {problem}")
            _check_free(node)
        # Our own node programs need no other node to start (they resolve and relay only
        # when mail comes): one warm process per role forks them all at once (the DNS
        # node loads its zones while the stores and relays start), and all are waited
        # for at once. Other software starts after the tiers before it answer.
        early = {n.name for n in ours if isinstance(kinds.get(n.kind), OurKind)}
        warm, self._warm = self._warm, None
        if warm is not None and warm.lab != plan.lab:
            warm.__exit__()
            warm = None
        roles: set[str] = {n.role for n in ours if n.name in early}
        with warm or _Forkers(plan.lab, roles) as forkers:
            tiers = {role: [n.name for n in ours if n.role == role and n.name in early]
                     for role in START_ORDER}  # fmt: skip
            for role, names in tiers.items():
                if names:
                    progress(f"starting {role}: {', '.join(names)}")
            with labdir.private():
                pids = forkers.fork(
                    {
                        role: [labdir.node_dir(plan, n) for n in names]
                        for role, names in tiers.items()
                    }
                )
                for role, names in tiers.items():
                    for name, pid in zip(names, pids[role], strict=True):
                        _pid_file(plan, name).write_text(str(pid))
            forkers.close()  # the spawners exit while their nodes start
            if early:
                group = [n for n in ours if n.name in early]
                wait_ready(group, time.monotonic() + READY_TIMEOUT, self._why_dead(plan))
        for role in START_ORDER:
            group = [n for n in ours if n.role == role and n.name not in early]
            if group:
                progress(f"starting {role}: {', '.join(n.name for n in group)}")
                for node in group:
                    self._spawn(plan, node)
                wait_ready(group, time.monotonic() + READY_TIMEOUT, self._why_dead(plan))

    def _spawn(self, plan: LabPlan, node: NodePlan) -> None:
        ndir = labdir.node_dir(plan, node.name)
        argv = kinds.get(node.kind).argv(plan, node)
        env = _node_env(plan.lab)
        # held: the node's pid file is there before its signal handlers (host_signals)
        with labdir.private(), held(), open(_log_file(plan, node.name), "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ndir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives `mxlab up`, killed as a group
            )
            _pid_file(plan, node.name).write_text(str(proc.pid))
        self._children[node.name] = proc

    def _why_dead(self, plan: LabPlan) -> Callable[[NodePlan], str | None]:
        def check(node: NodePlan) -> str | None:
            child = self._children.get(node.name)
            alive = child.poll() is None if child else _node_pid(plan, node.name)
            if alive:
                return None
            lines = _log_file(plan, node.name).read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else "no output"

        return check

    def down(self, lab: str) -> None:
        """Relays, then stores, then DNS (the reverse of up), each tier's nodes signalled
        together and then waited for together: one after the other, 200 nodes took ~25 ms
        each."""
        plan = labdir.read_plan(lab)
        for role in reversed(START_ORDER):
            self._signal(
                plan, [n.name for n in plan.start_order() if n.role == role], signal.SIGTERM
            )

    def status(self, lab: str) -> list[NodeStatus]:
        plan = labdir.read_plan(lab)
        out = []
        for node in plan.start_order():
            pid = _node_pid(plan, node.name)
            state = "running" if pid else "stopped"
            if not kinds.get(node.kind).runs:
                state = "external"
            out.append(NodeStatus(node.name, node.role, node.address, state, str(pid or "")))
        return out

    def start(self, plan: LabPlan, node: str) -> None:
        if _node_pid(plan, node) is not None:
            return
        target = plan.nodes[node]
        if not kinds.get(target.kind).runs:
            raise LabError(f"node {node} is external: mxlab does not run it")
        _check_free(target)
        self._spawn(plan, target)
        wait_ready([target], time.monotonic() + READY_TIMEOUT, self._why_dead(plan))

    def _signal(self, plan: LabPlan, nodes: list[str], sig: signal.Signals) -> None:
        """Signal each node's process group, then wait until every process of each is
        gone (they hold its ports); SIGKILL those still there at the deadline."""
        groups: dict[str, list[int]] = {}
        for node in nodes:
            self._children.pop(node, None)
            pid = _node_pid(plan, node)
            if pid is None:
                _pid_file(plan, node).unlink(missing_ok=True)
                continue
            groups[node] = [pid, *_descendants(pid)]  # ended only when all are
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while groups:
            for node, procs in list(groups.items()):
                if not any(_alive(p) for p in procs):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(procs[0], os.WNOHANG)  # reap when this process is the parent
                    _pid_file(plan, node).unlink(missing_ok=True)
                    del groups[node]
            if not groups:
                break
            if time.monotonic() > deadline:
                for procs in groups.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(procs[0], signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.02)

    def stop(self, plan: LabPlan, node: str) -> None:
        self._signal(plan, [node], signal.SIGTERM)

    def kill(self, plan: LabPlan, node: str) -> None:
        self._signal(plan, [node], signal.SIGKILL)

    def signal(self, plan: LabPlan, node: str, sig: signal.Signals) -> None:
        pid = _node_pid(plan, node)
        if pid is None:
            raise LabError(f"node {node} is not running")
        os.kill(pid, sig)

    def log_bytes(self, plan: LabPlan, node: str) -> bytes:
        path = _log_file(plan, node)
        return path.read_bytes() if path.exists() else b""

    def exec(self, plan: LabPlan, node: str, argv: list[str]) -> int:
        env = dict(os.environ, MXLAB_LAB=plan.lab, MXLAB_NODE=node)
        argv = kinds.get(plan.nodes[node].kind).local_exec(_node_pid(plan, node), argv)
        return subprocess.call(argv, cwd=labdir.node_dir(plan, node), env=env)

    def logs(self, plan: LabPlan, node: str, follow: bool) -> None:
        path = _log_file(plan, node)
        if not path.exists():
            return
        with open(path, "rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                elif not follow:
                    return
                else:
                    time.sleep(0.2)
