"""The nsd and unbound kinds (issue 16), through the shipped topologies/isp.yaml: NSD
serves the plan's zones, unbound resolves them through stub zones for the relays, and
mail crosses the lab. One lab on the local runtime (where the packages are installed
and we are root) and one under docker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest

import mxlab
from mxlab.lab import kinds
from mxlab.lab.errors import LabError
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import load_topology
from mxlab.nodes.config import RelayNodeConfig, ResolverNodeConfig
from tests.conftest import TOPOLOGIES, needs_docker

ISP = TOPOLOGIES / "isp.yaml"


def _lab(runtime: str, tmp: Path) -> Iterator[mxlab.Lab]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MXLAB_HOME", str(tmp / "mxlab-home"))
        with mxlab.Lab.up(ISP, runtime=runtime) as lab:
            yield lab


def _local_problem(tmp: Path) -> str | None:
    plan = make_plan(load_topology(ISP), runtime="local", lab_dir=tmp)
    for node in plan.nodes.values():
        problem = kinds.get(node.kind).local_problem(plan, node)
        if problem is not None:
            return f"{node.name}: {problem}"
    return None


@pytest.fixture(scope="module")
def local_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mxlab.Lab]:
    tmp = tmp_path_factory.mktemp("isp-local")
    problem = _local_problem(tmp / "probe")
    if problem is not None:
        pytest.skip(problem)
    yield from _lab("local", tmp)


@pytest.fixture(scope="module")
def docker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mxlab.Lab]:
    yield from _lab("docker", tmp_path_factory.mktemp("isp-docker"))


def ask(address: str, port: int, name: str, rdtype: str, rd: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if not rd:
        query.flags = 0
    return dns.query.udp(query, address, port=port, timeout=3)


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def server_software(lab: mxlab.Lab, node: str) -> str:
    """What the server says it is (version.bind, CHAOS TXT): NSD names itself."""
    n = lab.plan.nodes[node]
    query = dns.message.make_query("version.bind", dns.rdatatype.TXT, dns.rdataclass.CH)
    reply = dns.query.udp(query, n.address, port=n.ports["dns"], timeout=3)
    return " ".join(answers(reply))


def check_isp(lab: mxlab.Lab) -> None:
    """NSD is authoritative for every planned zone, unbound resolves them recursively,
    every relay asks unbound, and mail crosses between every pair of users."""
    ns, resolver = lab.plan.nodes["ns"], lab.plan.nodes["resolver"]
    assert "NSD" in server_software(lab, "ns")
    for domain in lab.plan.domains:
        reply = ask(ns.address, ns.ports["dns"], domain, "MX", rd=False)
        assert reply.flags & dns.flags.AA and answers(reply), domain
        recursive = ask(resolver.address, resolver.ports["dns"], domain, "MX")
        assert not recursive.flags & dns.flags.AA  # from unbound's cache, not authority
        assert answers(recursive) == answers(reply)
    for node in lab.plan.nodes.values():
        rev = dns.reversename.from_address(node.address).to_text()
        assert answers(ask(resolver.address, resolver.ports["dns"], rev, "PTR")) == [
            f"{node.fqdn}."
        ]
        if isinstance(node.config, RelayNodeConfig):
            assert node.config.dns.host == resolver.address
    report = lab.check(timeout=60)
    assert report.ok, [r.why for r in report.results if not r.ok]
    assert len(report.results) == 6


def test_local_isp_lab(local_lab: mxlab.Lab) -> None:
    check_isp(local_lab)


def test_generated_configs_are_files_in_the_lab(local_lab: mxlab.Lab) -> None:
    """What a student reads: nsd.conf with a zone file per planned zone, and an
    unbound.conf whose stub zones point at the lab's NSD."""
    nodes = local_lab.directory / "nodes"
    nsd_conf = (nodes / "ns" / "nsd" / "nsd.conf").read_text()
    for zone in local_lab.plan.zones:
        name = f"{zone.origin.rstrip('.')}.zone"
        assert f"name: {zone.origin}\n  zonefile: {name}" in nsd_conf
        assert (nodes / "ns" / "nsd" / name).read_text().count(" SOA ") == 1
    resolver = local_lab.plan.nodes["resolver"]
    assert isinstance(resolver.config, ResolverNodeConfig)
    unbound_conf = (nodes / "resolver" / "unbound" / "unbound.conf").read_text()
    ns = local_lab.plan.nodes["ns"]
    stubs = unbound_conf.count(f"stub-addr: {ns.address}@{ns.ports['dns']}")
    assert stubs == len(local_lab.plan.zones) == len(resolver.config.stub_zones)


def test_record_changes_reach_nsd(local_lab: mxlab.Lab) -> None:
    """``mxlab dns add`` rewrites NSD's zone files and restarts it; our DNS node's
    faults are refused in one line (NSD has no such switch)."""
    local_lab.dns_add("www.isp.test", "A", "192.0.2.7")
    ns, resolver = local_lab.plan.nodes["ns"], local_lab.plan.nodes["resolver"]
    assert answers(ask(ns.address, ns.ports["dns"], "www.isp.test", "A", rd=False)) == ["192.0.2.7"]
    assert answers(ask(resolver.address, resolver.ports["dns"], "www.isp.test", "A")) == [
        "192.0.2.7"
    ]
    with pytest.raises(LabError, match=r"^DNS faults are our DNS node's: ns runs nsd"):
        local_lab.dns_fail("isp.test")


def test_local_refusal_is_one_line(
    local_lab: mxlab.Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where a kind's program is missing, the local runtime refuses in one line."""
    import mxlab.lab.kinds.debian as debian

    monkeypatch.setattr(debian.shutil, "which", lambda *_a, **_k: None)
    monkeypatch.setenv("MXLAB_HOME", str(tmp_path))
    with pytest.raises(LabError) as err:
        mxlab.Lab.up(ISP, runtime="local")
    line = "node ns (kind nsd): nsd is not installed here (apt-get install nsd unbound)"
    assert str(err.value) == line


class TestDocker:
    pytestmark = needs_docker

    def test_docker_isp_lab(self, docker_lab: mxlab.Lab) -> None:
        check_isp(docker_lab)
