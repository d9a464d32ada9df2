"""Time `up` of a 10-node lab until every node answers its protocol, against creating
and starting 10 containers from the same image with the docker CLI, in the same run.

Prints both times, the ratio (target <= 1.3x) and each node's RSS (target <= 40 MiB).
Run: python bench/lab_up.py   (needs a Docker engine; builds the node image if missing)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import docker

from mxlab.lab import labdir
from mxlab.lab.image import ensure_image
from mxlab.lab.plan import make_plan
from mxlab.lab.runtime.docker import DockerRuntime, container_name
from mxlab.lab.topology import parse_topology

DOMAINS = 4  # 1 DNS + a relay and a store per domain + 1 edge relay = 10 nodes


def topology() -> str:
    nodes = ["  ns: {kind: dns}", "  edge: {kind: relay}"]
    domains = []
    for i in range(DOMAINS):
        d = f"d{i}"
        nodes += [f"  mx-{d}: {{kind: relay, next_hop: edge}}", f"  store-{d}: {{kind: store}}"]
        domains += [
            f"  {d}.test:",
            f"    store: store-{d}",
            f"    mx: [{{node: mx-{d}}}]",
            "    users: {u1: p1, u2: p2}",
        ]
    return "\n".join(["name: bench-up", "nodes:", *nodes, "domains:", *domains]) + "\n"


def rss_mib(client: docker.DockerClient, name: str) -> float:
    """Resident memory of the node process (PID 1 of its container), from /proc."""
    c = client.containers.get(name)
    code, out = c.exec_run(["grep", "VmRSS", "/proc/1/status"])
    return int(out.decode().split()[1]) / 1024


def main() -> int:
    client = docker.from_env(timeout=600)
    image = ensure_image(client, progress=lambda s: print(s, file=sys.stderr))
    topo = parse_topology(topology(), "bench")
    n = len(topo.nodes)
    with tempfile.TemporaryDirectory() as home:
        os.environ["MXLAB_HOME"] = home
        rt = DockerRuntime()
        plan = make_plan(
            topo, runtime="docker", lab_dir=labdir.lab_dir(topo.name),
            subnet=rt.choose_subnet(topo), privileged=True,
        )  # fmt: skip
        labdir.write_plan(plan)
        started = time.monotonic()
        rt.up(plan, lambda s: None)
        ours = time.monotonic() - started
        try:
            rss = {name: rss_mib(client, container_name(plan.lab, name)) for name in plan.nodes}
        finally:
            rt.down(plan.lab)

    names = [f"mxlab-bench-cli-{i}" for i in range(n)]
    started = time.monotonic()
    try:
        for name in names:
            subprocess.run(
                ["docker", "run", "-d", "--name", name, "--label", "mxlab.test=1", image,
                 "python3", "-c", "import time; time.sleep(600)"],
                check=True, capture_output=True,
            )  # fmt: skip
        cli = time.monotonic() - started
    finally:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True)

    print(f"nodes: {n}")
    print(f"mxlab up (until every protocol answers): {ours:.2f} s")
    print(f"docker CLI create+start (no readiness):  {cli:.2f} s")
    print(f"ratio: {ours / cli:.2f}x (target <= 1.3x)")
    for name, mib in sorted(rss.items()):
        print(f"rss {name:10s} {mib:6.1f} MiB")
    worst = max(rss.values())
    print(f"rss max: {worst:.1f} MiB (target <= 40 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
