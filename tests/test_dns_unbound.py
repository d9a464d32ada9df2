"""A real resolver accepts our answers: a private unbound, with stub zones for the lab
zones pointing at the DNS node, resolves MX, A, CNAME and PTR through it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mxlab.lab.kinds.unbound import unbound_conf
from mxlab.nodes.config import Zone
from tests.test_dns_support import (
    DnsNode,
    free_port,
    lab_zones,
    need,
    new_address,
    rich_plan,
    wait_for,
)

LAB_ZONES = [z.origin for z in lab_zones()]


@dataclass
class Unbound:
    address: str
    port: int
    proc: subprocess.Popen[bytes]


def start_unbound(tmp: Path, zones: list[Zone] | None = None) -> Iterator[Unbound]:
    """A DNS node serving ``zones`` and an unbound with them as stub zones."""
    binary = need("unbound")
    node = DnsNode(tmp / "node", zones=zones)
    origins = [z.origin for z in zones] if zones else LAB_ZONES
    address, port = new_address(), free_port()
    conf = tmp / "unbound.conf"
    dns = f"{node.address}@{node.port}"
    conf.write_text(unbound_conf(address, port, str(tmp), dns, origins, ["127.0.0.0/8"]))
    log = (tmp / "unbound.log").open("w")
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=log, stderr=log)
    unbound = Unbound(address, port, proc)
    try:
        wait_for(lambda: ask(unbound, origins[0], "SOA") or proc.poll() is not None)
        assert proc.poll() is None, (tmp / "unbound.log").read_text()
        yield unbound
    finally:
        proc.terminate()
        proc.wait(10)
        node.stop()


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    yield from start_unbound(Path(tmp_path_factory.mktemp("unbound")))


def ask(unbound: Unbound, name: str, rdtype: str) -> list[str]:
    cmd = [need("dig"), f"@{unbound.address}", "-p", str(unbound.port), "+short", "+time=2"]
    out = subprocess.run([*cmd, "+tries=1", name, rdtype], capture_output=True, text=True)
    return out.stdout.split("\n")[:-1] if out.returncode == 0 else []


def test_unbound_resolves_mx_and_a(resolver: Unbound) -> None:
    assert sorted(ask(resolver, "alpha.test", "MX")) == ["10 mx1.alpha.test.", "20 mx2.alpha.test."]
    assert ask(resolver, "mx1.alpha.test", "A") == ["127.10.0.25"]
    assert ask(resolver, "mx.beta.test", "A") == ["127.10.0.27"]


def test_unbound_follows_cnames_and_reverse(resolver: Unbound) -> None:
    assert ask(resolver, "chain.alpha.test", "A") == [
        "www.alpha.test.",
        "mx1.alpha.test.",
        "127.10.0.25",
    ]
    assert ask(resolver, "outside.alpha.test", "A") == ["mx.beta.test.", "127.10.0.27"]
    assert ask(resolver, "25.0.10.127.in-addr.arpa", "PTR") == ["mx1.alpha.test."]


def test_unbound_accepts_negative_answers(resolver: Unbound) -> None:
    cmd = [need("dig"), f"@{resolver.address}", "-p", str(resolver.port), "+time=2"]
    out = subprocess.run([*cmd, "nope.alpha.test", "A"], capture_output=True, text=True).stdout
    assert "status: NXDOMAIN" in out
    out = subprocess.run([*cmd, "_tcp.alpha.test", "A"], capture_output=True, text=True).stdout
    assert "status: NOERROR" in out and "ANSWER: 0" in out


def test_unbound_resolves_a_planned_lab(tmp_path: Path) -> None:
    """The planner's zones through a real resolver: each domain's MX by preference, the
    MX hosts' A, and forward-confirmed reverse DNS for every node."""
    plan = rich_plan(tmp_path / "lab")
    for unbound in start_unbound(tmp_path, plan.zones):
        assert sorted(ask(unbound, "beta.test", "MX")) == ["10 mx1.beta.test.", "20 mx2.beta.test."]
        for host in plan.nodes.values():
            assert ask(unbound, "-x", host.address) == [host.fqdn + "."]
            assert ask(unbound, host.fqdn, "A") == [host.address]
        assert ask(unbound, "webmail.alpha.test", "A")[-1] == plan.nodes["store-alpha"].address
