"""Our answers match NSD's, section for section, for the same zones (rendered by
``render_zone``): NSD is the reference authoritative server the design copies."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from mxlab.dns.zonefile import render_zone
from mxlab.lab.kinds.nsd import nsd_conf
from tests.test_dns_support import DnsNode, free_port, lab_zones, need, new_address, wait_for

QUERIES = [
    (name, rdtype)
    for name in [
        "alpha.test", "Mx2.Alpha.test", "ns.alpha.test", "_tcp.alpha.test", "www.alpha.test",
        "chain.alpha.test", "dangling.alpha.test", "outside.alpha.test", "ext.alpha.test",
        "nope.alpha.test",
        "x.wild.alpha.test", "wild.alpha.test", "host.sub.alpha.test", "beta.test",
        "25.0.10.127.in-addr.arpa", "many.big.test",
    ]
    for rdtype in ["A", "AAAA", "MX", "NS", "SOA", "TXT", "CNAME", "PTR", "SRV"]
]  # fmt: skip


class Nsd:
    def __init__(self, tmp: Path) -> None:
        binary = need("nsd")
        self.address, self.port = new_address(), free_port()
        zones = {z.origin: f"z{i}.zone" for i, z in enumerate(lab_zones())}
        for zone in lab_zones():
            (tmp / zones[zone.origin]).write_text(render_zone(zone))
        (tmp / "nsd.conf").write_text(nsd_conf(self.address, self.port, str(tmp), zones))
        self.proc = subprocess.Popen([binary, "-d", "-c", str(tmp / "nsd.conf")])


def dig(address: str, port: int, *args: str) -> str:
    cmd = [need("dig"), f"@{address}", "-p", str(port), "+norec", "+nocookie", "+time=2"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True).stdout


def canonical(out: str) -> tuple[str, str, list[list[str]]]:
    """Status, flags, and every section's records sorted (order within a section and
    the spelling of names may differ between two correct servers)."""
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([\w ]*);", out)
    assert status and flags, out
    sections = re.findall(r";; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:\n(.*?)(?:\n\n|\Z)", out, re.S)
    records = [
        [kind, *line.lower().split()] for kind, body in sections for line in body.splitlines()
    ]
    return status.group(1), flags.group(1), sorted(records)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DnsNode, Nsd]]:
    tmp = Path(tmp_path_factory.mktemp("nsd"))
    nsd = Nsd(tmp)
    node = DnsNode(tmp / "node")
    try:
        wait_for(lambda: "status: NOERROR" in dig(nsd.address, nsd.port, "alpha.test", "SOA"))
        yield node, nsd
    finally:
        nsd.proc.terminate()
        nsd.proc.wait(10)
        node.stop()


def ask(address: str, port: int, name: str, rdtype: str) -> tuple[object, ...]:
    """A reply reduced to what two correct servers must agree on: rcode, flags, and
    each section's records in any order and any letter case."""
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    query.flags = 0  # no RD
    reply = dns.query.udp(query, address, port=port, timeout=3)
    sections = [
        sorted(rrs.to_text().lower().splitlines())
        for rrs in (*reply.answer, *reply.authority, *reply.additional)
    ]
    return reply.rcode(), reply.flags, sorted(sections)


def test_answers_match_nsd(servers: tuple[DnsNode, Nsd]) -> None:
    node, nsd = servers
    differences = []
    for name, rdtype in QUERIES:
        ours = ask(node.address, node.port, name, rdtype)
        theirs = ask(nsd.address, nsd.port, name, rdtype)
        if ours != theirs:
            differences.append(f"{name} {rdtype}:\n  ours {ours}\n  nsd  {theirs}")
    assert not differences, "\n".join(differences)


VARIANTS = [
    ["+noedns", "+ignore", "many.big.test", "TXT"],
    ["+bufsize=4096", "+dnssec", "alpha.test", "MX"],
    ["+edns=1", "+noednsnegotiation", "alpha.test", "MX"],
    ["example.com", "A"],
    ["+opcode=status", "alpha.test", "SOA"],  # NSD REFUSEs NOTIFY from strangers
    ["+tcp", "alpha.test", "MX"],
]


@pytest.mark.parametrize("args", VARIANTS, ids=" ".join)
def test_protocol_edges_match_nsd(servers: tuple[DnsNode, Nsd], args: list[str]) -> None:
    node, nsd = servers
    ours = dig(node.address, node.port, *args)
    theirs = dig(nsd.address, nsd.port, *args)
    assert canonical(ours) == canonical(theirs), ours + theirs
    edns = re.compile(r"; EDNS: .*")
    assert edns.findall(ours) == edns.findall(theirs)
