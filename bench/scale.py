"""Labs of N domains: time to all-ready, memory, time for `down`, and how each grows
with N (nothing may grow faster than linear).

    python bench/scale.py [--runtime local|docker] [--sizes 10,50,100,200]

Each domain gets a relay (its MX and submission) and a store; one DNS node serves all:
2N+1 nodes. Per N: seconds from `up` to every node answering its protocol (and of those,
the seconds until the first node is started: planning, its keys and password hashes,
and writing the lab directory), the nodes' RSS and PSS summed (from /proc; PSS shares a
page among the processes mapping it, so its sum is what the lab costs the machine) and
per node, and seconds for `down`.

The peer, measured in the same run: on the local runtime, as many bare Python processes
as the lab has nodes (``python3 -c "import asyncio"``, the floor any Python node starts
from), started at once, timed until all have exited, with their RSS at exit; on docker,
as many containers run by the docker CLI (no readiness), as bench/lab_up.py does.
Ratios printed: ours over the peer at each N, and each quantity at N over its value at
the smallest N, next to N's own ratio (linear growth keeps the two alike).
"""

from __future__ import annotations

import argparse
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from mxlab.lab import labdir
from mxlab.lab.image import ensure_image, runtime_volume
from mxlab.lab.lifecycle import bring_up, tear_down
from mxlab.lab.topology import parse_topology

TARGET_READY_100 = 10.0  # seconds, local runtime
time_cli = runpy.run_path(str(Path(__file__).with_name("lab_up.py")))["time_cli"]  # its peer
TARGET_NODE_MIB = 20.0


def topology(n: int) -> str:
    nodes, domains = ["  ns: {kind: dns}"], []
    for i in range(n):
        d = f"d{i}"
        nodes += [f"  mx-{d}: {{kind: relay}}", f"  store-{d}: {{kind: store}}"]
        domains += [
            f"  {d}.test:",
            f"    store: store-{d}",
            f"    mx: [{{node: mx-{d}}}]",
            "    users: {u1: secret-1}",
        ]
    # more than a /24 holds: a /22 pinned for either runtime
    wide = ["settings: {local_subnet: 127.120.0.0/22, docker_subnet: 172.29.0.0/22}"]
    head = [f"name: scale{n}", *(wide if 2 * n + 1 > 253 else []), "nodes:"]
    return "\n".join([*head, *nodes, "domains:", *domains]) + "\n"


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["Rss"], fields["Pss"]


def node_pids(plan, runtime: str) -> dict[str, int]:  # noqa: ANN001 - a LabPlan
    if runtime == "local":
        return {n: int((labdir.node_dir(plan, n) / "pid").read_text()) for n in plan.nodes}
    from mxlab.lab.runtime.docker import container_name

    client = docker.from_env()
    return {
        n: client.containers.get(container_name(plan.lab, n)).attrs["State"]["Pid"]
        for n in plan.nodes
    }


def measure(n: int, runtime: str) -> dict[str, float]:
    topo = parse_topology(topology(n), f"scale{n}.yaml")
    if runtime == "docker":
        client = docker.from_env(timeout=900)  # a rebuild (and its runtime volume) is not `up`
        runtime_volume(client, ensure_image(client))
    first_start: list[float] = []  # when the first node is started: the plan is written

    def progress(line: str) -> None:
        if line.startswith("starting ") and not first_start:
            first_start.append(time.monotonic())

    started = time.monotonic()
    plan, _ = bring_up(topo, runtime, progress)
    ready = time.monotonic() - started
    planned = (first_start or [started])[0] - started
    try:
        mem = [memory_kib(pid) for pid in node_pids(plan, runtime).values()]
    finally:
        started = time.monotonic()
        tear_down(plan.lab, lambda line: None)
        down = time.monotonic() - started
    rss, pss = (sum(m[i] for m in mem) / 1024 for i in (0, 1))
    nodes = len(plan.nodes)
    return {
        "nodes": nodes, "ready": ready, "planned": planned, "down": down, "rss": rss, "pss": pss,
        "rss_node": rss / nodes, "pss_node": pss / nodes,
        "rss_max": max(m[0] for m in mem) / 1024,
    }  # fmt: skip


PEER = "import asyncio; print(int(open('/proc/self/statm').read().split()[1]) * 4)"  # KiB


def peer(count: int, runtime: str) -> dict[str, float]:
    """Local: ``count`` bare interpreters importing asyncio, all at once, until all
    exit. Docker: ``count`` containers by the docker CLI (bench/lab_up.py's peer)."""
    if runtime == "docker":
        from mxlab.lab.runtime.docker import DockerRuntime

        # where the lab was (a /22 pinned above 253 nodes), else any /24 free now
        subnet = DockerRuntime().choose_subnet(parse_topology(topology(count // 2), "peer"))
        return {"ready": time_cli(ensure_image(docker.from_env()), count, subnet), "rss_node": 0}
    started = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, "-c", PEER], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    rss = sum(int(p.communicate()[0].split()[0]) for p in procs) / 1024
    return {"ready": time.monotonic() - started, "rss_node": rss / count}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=("local", "docker"), default="local")
    parser.add_argument("--sizes", default="10,50,100,200")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.environ["MXLAB_HOME"] = tempfile.mkdtemp(prefix="mxlab-bench-scale-")
    rows = {}
    for n in sizes:
        ours = measure(n, args.runtime)
        rows[n] = ours | {f"peer_{k}": v for k, v in peer(int(ours["nodes"]), args.runtime).items()}
        r = rows[n]
        print(
            f"N={n:4d} nodes={r['nodes']:4.0f}  ready {r['ready']:6.2f} s"
            f" (planned in {r['planned']:5.2f} s; peer {r['peer_ready']:5.2f} s,"
            f" {r['ready'] / r['peer_ready']:4.1f}x)"
            f"  down {r['down']:5.2f} s  RSS {r['rss']:7.0f} MiB ({r['rss_node']:4.1f}/node,"
            f" max {r['rss_max']:4.1f}; peer {r['peer_rss_node']:4.1f}/node)"
            f"  PSS {r['pss']:7.0f} MiB ({r['pss_node']:4.1f}/node)",
            flush=True,
        )
    base = sizes[0]
    print(f"\ngrowth against N={base} (linear: each ratio near N's own ratio, or below)")
    print(f"{'N':>5} {'N ratio':>8} {'ready':>7} {'down':>7} {'RSS':>7} {'PSS':>7}")
    for n in sizes:
        r, b = rows[n], rows[base]
        print(
            f"{n:5d} {n / base:8.1f} {r['ready'] / b['ready']:7.1f} {r['down'] / b['down']:7.1f}"
            f" {r['rss'] / b['rss']:7.1f} {r['pss'] / b['pss']:7.1f}"
        )
    if args.runtime == "local" and 100 in rows:
        ready = rows[100]["ready"]
        print(f"\n100 domains ready in {ready:.2f} s: target <= {TARGET_READY_100:.0f} s "
              f"({'met' if ready <= TARGET_READY_100 else 'NOT met'})")  # fmt: skip
    worst = max(r["pss_node"] for r in rows.values())
    print(f"PSS per node, worst N: {worst:.1f} MiB: target <= {TARGET_NODE_MIB:.0f} MiB "
          f"({'met' if worst <= TARGET_NODE_MIB else 'NOT met'}); "
          f"RSS per node, worst: {max(r['rss_node'] for r in rows.values()):.1f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
