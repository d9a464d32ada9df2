"""What the Swarm overlay costs: the same two-domain lab on a docker bridge and on an
attachable overlay (VXLAN), measured in the same run.

Per network: SMTP round trips inside the lab (mx-alpha opens a connection to mx-beta:25
and reads the banner, from within its container), and mail delivery end to end
(submitted at alice's relay, fetched from bob's store). Prints medians and the ratio
overlay/bridge. Makes a single-node swarm if the engine is in none, and leaves it after.

    python bench/overlay.py [MESSAGES]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import docker

import mxlab
from mxlab.lab.runtime.docker import container_name

TWO = Path(__file__).resolve().parent.parent / "topologies" / "two-domains.yaml"
ROUND_TRIPS = """
import socket, statistics, time
took = []
for _ in range(200):
    t = time.perf_counter()
    with socket.create_connection(("mx-beta.beta.test", 25)) as s:
        s.recv(512)
    took.append(time.perf_counter() - t)
print(statistics.median(took) * 1000)
"""


def measure(runtime: str, messages: int) -> tuple[float, float]:
    """(median ms of an SMTP connect + banner, median s of a delivery) on ``runtime``."""
    client = docker.from_env()
    with mxlab.Lab.up(TWO, runtime, name=f"bench-{runtime}") as lab:
        mx = client.containers.get(container_name(lab.name, "mx-alpha"))
        out = mx.exec_run(["python3", "-c", ROUND_TRIPS]).output.decode()
        connect_ms = float(out.strip().splitlines()[-1])
        latencies = []
        for _ in range(messages):
            sent = lab.send("alice@alpha.test", ["bob@beta.test"])
            (result,) = lab.delivered(sent)
            assert result.ok and result.latency is not None, result
            latencies.append(result.latency)
    return connect_ms, statistics.median(latencies)


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    client = docker.from_env()
    made = client.info()["Swarm"]["LocalNodeState"] == "inactive"
    if made:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        bridge = measure("docker", messages)
        overlay = measure("swarm", messages)
    finally:
        if made:
            client.swarm.leave(force=True)
    print(f"{'':28}{'bridge':>10}{'overlay':>10}{'ratio':>8}")
    print(f"{'SMTP connect+banner, ms':28}{bridge[0]:10.2f}{overlay[0]:10.2f}"
          f"{overlay[0] / bridge[0]:8.2f}")  # fmt: skip
    print(f"{'delivery alice->bob, s':28}{bridge[1]:10.3f}{overlay[1]:10.3f}"
          f"{overlay[1] / bridge[1]:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
