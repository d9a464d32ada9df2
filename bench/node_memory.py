"""Memory of each node kind (relay, store, DNS) as it runs, against a bare Python
process measured in the same run, and what each kind's imports cost.

    python bench/node_memory.py [--domains 4] [--top 12]

A lab of N domains (a relay and a store each, one DNS node) is planned for the local
runtime and each node kind is measured the two ways nodes run:

- fresh: ``python -m mxlab.nodes ROLE --config config.json`` in the node's directory, as
  a container runs it: one interpreter per node, sharing only files with the others
  (as containers of one image share its files' pages);
- forked: by ``python -m mxlab.nodes.spawn ROLE``, as the local runtime starts them: the
  spawner imports once and forks the N nodes, which share its pages copy-on-write; it
  exits once they are forked, as in a lab.

Memory is read from /proc/PID/smaps_rollup once every node answers its protocol (idle),
and again once each domain's user has sent the next domain's a message and it is in
that user's INBOX (mail). RSS counts every page a process maps, shared or not; PSS
splits a shared page among the processes sharing it, so PSS summed over processes is
what they cost the machine: the goal of 500 nodes in 10 GiB is a PSS budget (printed
for both ways, after mail), while the issue's target (<= 20 MiB) is stated in RSS.
Both are printed, with the ratio to the peer: a process that ran ``import asyncio,
ssl`` (the floor of any node: each one serves asyncio and TLS).

Imports: every node's start-up run once more with an import hook; per top-level
package, beyond what the peer imports: modules, milliseconds, and the memory they keep
allocated (tracemalloc, in a second run so that it does not slow the timed one).

The nodes run a compiled copy of mxlab (PYTHONPATH), as the node image does: with
PYTHONDONTWRITEBYTECODE set and no __pycache__ in the checkout, every node would
compile mxlab from source and keep the compiler's garbage (1-2 MiB a node).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mxlab.lab import kinds, labdir
from mxlab.lab.mail import build_message, imap_by_message_id, submit
from mxlab.lab.plan import LabPlan, NodePlan, make_plan
from mxlab.lab.ready import wait_ready
from mxlab.lab.topology import parse_topology

TARGET_RSS_MIB = 20.0
BUDGET_GIB, BUDGET_NODES = 10.0, 500
KINDS = ("relay", "store", "dns")
SUBNET = "127.93.0.0/24"
# N domains, each with a relay (mx-dI) and a store (store-dI), and one DNS node (ns)
topology = runpy.run_path(str(Path(__file__).with_name("scale.py")))["topology"]
PEER = "import asyncio, ssl, sys; print('ready', flush=True); sys.stdin.read()"

# Run in the node's directory as ``python -c PROFILE ROLE OUT TRACE``: the node started
# as mxlab.nodes.__main__ starts it, each import's own time (and with TRACE its net
# allocation) recorded, written to OUT as JSON when SIGTERM ends the node.
PROFILE = """
import importlib._bootstrap as boot, json, sys, time, tracemalloc
import asyncio, ssl  # the peer's imports: not counted
role, out, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
stats, stack, load = {}, [], boot._find_and_load
now = (lambda: tracemalloc.get_traced_memory()[0]) if trace else (lambda: 0)

def find_and_load(name, import_):
    if name in sys.modules:
        return load(name, import_)
    t0, m0 = time.perf_counter(), now()
    stack.append([0.0, 0])
    try:
        return load(name, import_)
    finally:
        dt, dm = time.perf_counter() - t0, now() - m0
        inner = stack.pop()
        stats[name] = [dt - inner[0], dm - inner[1]]
        if stack:
            stack[-1][0] += dt
            stack[-1][1] += dm

if trace:
    tracemalloc.start()
boot._find_and_load = find_and_load
from mxlab.nodes.__main__ import main
try:
    main([role, "--config", "config.json"])
finally:
    with open(out, "w") as f:
        json.dump(stats, f)
"""


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process, from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["Rss"] / 1024, fields["Pss"] / 1024


def alive(pids: dict[str, int]) -> Callable[[NodePlan], str | None]:
    """For wait_ready: None while the node's process runs (a zombie has exited)."""

    def check(node: NodePlan) -> str | None:
        try:
            state = Path(f"/proc/{pids[node.name]}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return "exited"
        return "exited" if state == "Z" else None

    return check


def stop(pids: list[int]) -> None:
    """SIGTERM, then wait until each is gone (our own children reaped)."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids:
        try:
            os.waitpid(pid, 0)  # a fresh node or a profiled run: our child
        except ChildProcessError:  # a forked node: the spawner's, reparented
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)


Memory = dict[str, tuple[float, float]]  # node -> (RSS, PSS) in MiB


def measured(plan: LabPlan, nodes: list[NodePlan], pids: dict[str, int]) -> tuple[Memory, Memory]:
    """Each node's memory once all answer their protocols, and again once each domain's
    user has sent the next domain's a message and it is in that user's INBOX (the
    relays have checked, signed and relayed mail, the stores delivered and served it);
    then they are stopped."""
    try:
        wait_ready(nodes, time.monotonic() + 60, alive(pids))
        idle = {n.name: memory_mib(pids[n.name]) for n in nodes}
        exchange_mail(plan)
        return idle, {n.name: memory_mib(pids[n.name]) for n in nodes}
    finally:
        stop(list(pids.values()))


def exchange_mail(plan: LabPlan) -> None:
    users = [u.address for u in plan.users]
    sent = {}
    for i, sender in enumerate(users):
        rcpt = users[(i + 1) % len(users)]
        msg = build_message(sender, [rcpt], "memory", "hello\n")
        submit(plan, msg)
        sent[rcpt] = str(msg["Message-ID"])
    deadline = time.monotonic() + 30
    while sent and time.monotonic() < deadline:
        sent = {r: m for r, m in sent.items() if not imap_by_message_id(plan, r, [m])}
        time.sleep(0.1)
    if sent:
        sys.exit(f"mail to {', '.join(sent)} did not arrive within 30 s")


def start(plan: LabPlan, node: NodePlan, argv: list[str], env: dict[str, str]) -> int:
    cwd, null = labdir.node_dir(plan, node.name), subprocess.DEVNULL
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=null, stdout=null).pid


def run_fresh(plan: LabPlan, nodes: list[NodePlan], env: dict[str, str]) -> tuple[Memory, Memory]:
    """Each node as its own interpreter, as in a container."""
    pids = {n.name: start(plan, n, kinds.get(n.kind).argv(plan, n), env) for n in nodes}
    return measured(plan, nodes, pids)


def run_forked(plan: LabPlan, nodes: list[NodePlan], env: dict[str, str]) -> tuple[Memory, Memory]:
    """The nodes forked by one warm spawner per role, as the local runtime does."""
    pids: dict[str, int] = {}
    for role in KINDS:
        group = [n for n in nodes if n.role == role]
        spawner = subprocess.Popen(
            [sys.executable, "-m", "mxlab.nodes.spawn", role], cwd=env["MXLAB_HOME"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip  # -m puts the cwd first on the path: not the checkout's sources
        dirs = "".join(f"{labdir.node_dir(plan, n.name)}\n" for n in group)
        out, _ = spawner.communicate(dirs)  # it forks each, then exits as in a lab
        pids |= {n.name: int(pid) for n, pid in zip(group, out.split(), strict=True)}
    return measured(plan, nodes, pids)


def peer(env: dict[str, str]) -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    try:
        return memory_mib(proc.pid)
    finally:
        proc.communicate(b"")


def import_costs(
    plan: LabPlan, node: NodePlan, env: dict[str, str], out: Path
) -> dict[str, list[float]]:
    """Per top-level package: [modules, ms, KiB] of a node's start-up imports."""
    runs = []
    for trace in ("0", "1"):
        argv = [sys.executable, "-c", PROFILE, node.role, str(out), trace]
        pid = start(plan, node, argv, env)
        try:
            wait_ready([node], time.monotonic() + 60, alive({node.name: pid}))
        finally:
            stop([pid])
        runs.append(json.loads(out.read_text()))
    timed, traced = runs
    packages: dict[str, list[float]] = {}
    for name, (seconds, _) in timed.items():
        row = packages.setdefault(name.split(".")[0], [0, 0.0, 0.0])
        row[0] += 1
        row[1] += seconds * 1000
        row[2] += traced.get(name, [0, 0])[1] / 1024
    return packages


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=4, help="relays and stores forked")
    parser.add_argument("--top", type=int, default=12, help="packages listed per kind")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mxlab-bench-memory-"))
    # the sources compiled beside a copy, found first on the path: the node image's way
    lib = work / "lib"
    shutil.copytree(Path(__file__).resolve().parent.parent / "mxlab", lib / "mxlab")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(lib)], check=True)
    env = dict(os.environ, MXLAB_HOME=str(work), PYTHONPATH=str(lib))
    os.environ["MXLAB_HOME"] = env["MXLAB_HOME"]
    topo = parse_topology(topology(args.domains), "scale.yaml")
    plan = make_plan(topo, runtime="local", lab_dir=work / "lab", subnet=SUBNET)
    labdir.write_plan(plan)
    nodes = [n for n in plan.start_order() if n.role in KINDS]
    one = {role: next(n for n in nodes if n.role == role) for role in KINDS}

    base = peer(env)
    runs = {"fresh": run_fresh(plan, nodes, env), "forked": run_forked(plan, nodes, env)}
    out = work / "imports.json"
    costs = {role: import_costs(plan, node, env, out) for role, node in one.items()}

    print(f"peer: python -c 'import asyncio, ssl'  RSS {base[0]:5.1f} MiB  PSS {base[1]:5.1f} MiB")
    print(f"{args.domains} domains; per kind the largest node's memory (MiB), idle and after mail")
    head = f"{'kind':6} {'how':6} {'when':5} {'RSS':>6} {'PSS':>6} {'RSS/peer':>9} {'PSS/peer':>9}"
    print(f"{head}  RSS target")
    worst: dict[tuple[str, str], float] = {}  # (how, role) -> PSS after mail
    for role in KINDS:
        group = [n.name for n in nodes if n.role == role]
        for how, phases in runs.items():
            for when, memory in zip(("idle", "mail"), phases, strict=True):
                rss, pss = (max(memory[g][i] for g in group) for i in (0, 1))
                worst[how, role] = pss
                verdict = "met" if rss <= TARGET_RSS_MIB else "over"
                print(
                    f"{role:6} {how:6} {when:5} {rss:6.1f} {pss:6.1f} {rss / base[0]:8.2f}x"
                    f" {pss / base[1]:8.2f}x  <= {TARGET_RSS_MIB:.0f} MiB: {verdict}"
                )
    for how, where in (("fresh", "docker"), ("forked", "local runtime")):
        # a lab of N domains runs N relays, N stores and one DNS node
        per_domain = worst[how, "relay"] + worst[how, "store"]
        total = BUDGET_NODES / 2 * per_domain / 1024
        print(
            f"{BUDGET_NODES} {how} nodes ({where}) by PSS after mail: {total:.1f} GiB"
            f" (budget {BUDGET_GIB:.0f} GiB: {'met' if total <= BUDGET_GIB else 'over'})"
        )
    for role in KINDS:
        packages = costs[role]
        mods, ms, kib = (sum(r[i] for r in packages.values()) for i in (0, 1, 2))
        print(
            f"\n{role}: imports beyond the peer's: {mods:.0f} modules, {ms:.0f} ms, {kib:.0f} KiB"
        )
        print(f"  {'package':24} {'modules':>7} {'ms':>7} {'KiB':>7}")
        for name, (n, t, k) in sorted(packages.items(), key=lambda kv: -kv[1][2])[: args.top]:
            print(f"  {name:24} {n:7.0f} {t:7.1f} {k:7.0f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
