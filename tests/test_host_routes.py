"""A lab's docker network stays off the host's routes (a VPN's, a LAN's): the bridge's
longer prefix would take the host's traffic for those addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mxlab.lab.errors import LabError
from mxlab.lab.runtime import docker as docker_runtime
from mxlab.lab.runtime.routes import host_routes
from mxlab.lab.topology import load_topology

from .conftest import TOPOLOGIES

# /proc/net/route as the kernel prints it: addresses and masks in network byte order,
# shown as little-endian hex integers
TABLE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
tun0\t00001EAC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
tun0\t0A00000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-0123abcd\t00001FAC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def test_the_route_table_is_read_without_the_default_and_dockers_bridges() -> None:
    assert host_routes(TABLE) == {
        "dev eth0 192.0.2.0/24": ipaddress.IPv4Network("192.0.2.0/24"),
        "dev tun0 172.30.0.0/16": ipaddress.IPv4Network("172.30.0.0/16"),
        "dev tun0 10.0.0.10/32": ipaddress.IPv4Network("10.0.0.10/32"),
    }


def test_this_hosts_routes_are_read() -> None:
    table = Path("/proc/net/route").read_text()
    found = host_routes()
    assert all(str(net.network_address) != "0.0.0.0" for net in found.values())
    assert {name.split()[1] for name in found} <= {line.split()[0] for line in table.splitlines()}


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> docker_runtime.DockerRuntime:
    """The docker runtime with no engine: no networks, the host's routes from TABLE."""
    monkeypatch.setattr(docker_runtime.docker, "from_env", lambda **kw: None)
    monkeypatch.setattr(docker_runtime.DockerRuntime, "_used_subnets", lambda self, lab: {})
    monkeypatch.setattr(docker_runtime, "host_routes", lambda: host_routes(TABLE))
    return docker_runtime.DockerRuntime()


def test_a_lab_subnet_is_chosen_off_the_hosts_routes(runtime: docker_runtime.DockerRuntime) -> None:
    # the VPN's 172.30.0.0/16 is the first pool: the lab goes to the spill pool
    chosen = ipaddress.IPv4Network(
        runtime.choose_subnet(load_topology(TOPOLOGIES / "two-domains.yaml"))
    )
    assert not chosen.overlaps(ipaddress.IPv4Network("172.30.0.0/16"))
    assert chosen.subnet_of(docker_runtime.SPILL_POOL)


def test_a_pinned_subnet_on_a_route_is_refused_in_one_line(
    runtime: docker_runtime.DockerRuntime,
) -> None:
    topo = load_topology(TOPOLOGIES / "two-domains.yaml")
    topo.settings.docker_subnet = "172.30.5.0/24"
    with pytest.raises(LabError, match=r"overlaps the host's route dev tun0 172\.30\.0\.0/16"):
        runtime.choose_subnet(topo)
