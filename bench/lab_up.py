"""Time `up` of a 10-node lab until every node answers its protocol, against creating
and starting 10 containers from the same image with the docker CLI, in the same run.

The peer is what a person scripting the lab by hand would run: a bridge network, then
`docker run -d` with a static address per container, one after the other, and no wait
for readiness (its containers only sleep). It is the stricter peer: ours is timed until
every node answers SMTP, LMTP, IMAP, POP3 or DNS, which includes each node's own start-
up (Python and its imports); a peer that also waited for a listening process would be
slower by about that much. Building the node image and filling its runtime volume happen
once per build, before either side is timed.

Prints both times, the ratio (target <= 1.1x) and each node's RSS (target <= 20 MiB).
Run: python bench/lab_up.py [rounds]  (needs a Docker engine; builds the node image if
missing)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time

import docker
import docker.errors

from mxlab.lab import labdir
from mxlab.lab.image import ensure_image, runtime_volume
from mxlab.lab.plan import make_plan
from mxlab.lab.runtime.base import SubnetTaken
from mxlab.lab.runtime.docker import DockerRuntime, container_name, remove_network
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


def time_ours(client: docker.DockerClient, topo) -> tuple[float, dict[str, float]]:  # noqa: ANN001
    """Seconds for `up` until every node answers its protocol, and each node's RSS (on
    a shared engine another lab may take the subnet between choosing and creating it)."""
    for _ in range(5):
        try:
            return _time_ours(client, topo)
        except SubnetTaken:
            continue
    sys.exit("no free subnet after 5 tries")


def _time_ours(client: docker.DockerClient, topo) -> tuple[float, dict[str, float]]:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as home:
        os.environ["MXLAB_HOME"] = home
        rt = DockerRuntime()
        runtime_volume(client, ensure_image(client))  # untimed: once per build of the image
        plan = make_plan(
            topo, runtime="docker", lab_dir=labdir.lab_dir(topo.name),
            subnet=rt.choose_subnet(topo), privileged=True,
        )  # fmt: skip
        labdir.write_plan(plan)
        started = time.monotonic()
        try:
            rt.up(plan, lambda s: None)
            took = time.monotonic() - started
            rss = {name: rss_mib(client, container_name(plan.lab, name)) for name in plan.nodes}
        finally:
            rt.down(plan.lab)
    return took, rss


def time_cli(image: str, n: int, subnet: str) -> float:
    """The same containers by hand: a bridge network with that subnet, then `docker run`
    with a static address for each, one after the other; no readiness wait at all."""
    hosts = list(ipaddress.ip_network(subnet).hosts())[1 : n + 1]
    net = f"mxlab-bench-cli-{os.getpid()}-{time.monotonic_ns()}"  # never a stuck one's
    names = [f"{net}-{i}" for i in range(n)]
    label = "mxlab.test=1"
    started = time.monotonic()
    try:
        cmd = f"docker network create --subnet {subnet} --label {label} {net}"
        subprocess.run(cmd.split(), check=True, capture_output=True)
        for name, addr in zip(names, hosts, strict=True):
            cmd = f"docker run -d --name {name} --label {label} --network {net} --ip {addr}"
            argv = [*cmd.split(), image, "python3", "-c", "import time; time.sleep(600)"]
            subprocess.run(argv, check=True, capture_output=True)
        return time.monotonic() - started
    finally:
        for i in range(0, n, 10):  # `docker rm` of 100 at once leaked an endpoint here
            subprocess.run(["docker", "rm", "-f", *names[i : i + 10]], capture_output=True)
        with contextlib.suppress(docker.errors.NotFound):  # not made, if its create failed
            remove_network(docker.from_env().networks.get(net))  # waits out stale endpoints


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    client = docker.from_env(timeout=600)
    image = ensure_image(client, progress=lambda s: print(s, file=sys.stderr))
    topo = parse_topology(topology(), "bench")
    n = len(topo.nodes)
    ours, cli, rss = [], [], {}
    for _ in range(rounds):  # alternate, so drift in the machine's load hits both alike
        took, rss = time_ours(client, topo)
        ours.append(took)
        subnet = DockerRuntime().choose_subnet(topo)  # free now (other labs come and go)
        cli.append(time_cli(image, n, subnet))
    mine, theirs = statistics.median(ours), statistics.median(cli)
    print(f"nodes: {n}, rounds: {rounds} (medians)")
    print(f"per round, ours: {' '.join(f'{t:.2f}' for t in ours)}", end="; ")
    print(f"CLI: {' '.join(f'{t:.2f}' for t in cli)}")
    print(f"mxlab up (network, containers, every protocol answering): {mine:.2f} s")
    print(f"docker CLI (network, run -d with static IPs, no readiness): {theirs:.2f} s")
    print(f"ratio: {mine / theirs:.2f}x (target <= 1.1x)")
    for name, mib in sorted(rss.items()):
        print(f"rss {name:10s} {mib:6.1f} MiB")
    print(f"rss max: {max(rss.values()):.1f} MiB (target <= 20 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
