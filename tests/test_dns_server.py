"""The DNS node as a process (``python -m mxlab.nodes dns``), asked with dig and kdig
over UDP and TCP: every authoritative behaviour, on 127.10.x.y."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from mxlab.dns.faults import write_faults
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import load_topology
from tests.conftest import TOPOLOGIES
from tests.test_dns_support import DnsNode, dig, forward_zone, need, wait_for


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsNode]:
    node = DnsNode(Path(tmp_path_factory.mktemp("dnsnode")))
    yield node
    node.stop()


def header(out: str) -> tuple[str, set[str]]:
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([\w ]*);", out)
    assert status and flags, out
    return status.group(1), set(flags.group(1).split())


def section(out: str, name: str) -> list[list[str]]:
    """The records of one dig output section, as split fields."""
    match = re.search(rf";; {name} SECTION:\n(.*?)(?:\n\n|\Z)", out, re.S)
    return [line.split() for line in match.group(1).splitlines()] if match else []


def test_ready_event_once_and_no_query_logs(node: DnsNode) -> None:
    dig(node, "alpha.test", "MX")
    assert len(node.events("ready")) == 1
    assert len(node.log.read_text().splitlines()) == 1  # no line per query


def test_mx_answer_flags_authority_and_additional(node: DnsNode) -> None:
    out = dig(node, "alpha.test", "MX")
    status, flags = header(out)
    assert status == "NOERROR" and {"qr", "aa", "rd"} <= flags and "ra" not in flags
    assert sorted(r[-2:] for r in section(out, "ANSWER")) == [
        ["10", "mx1.alpha.test."],
        ["20", "mx2.alpha.test."],
    ]
    assert [r[-1] for r in section(out, "AUTHORITY")] == ["ns.alpha.test."]
    additional = {(r[0], r[3]): r[4] for r in section(out, "ADDITIONAL")}
    assert additional[("mx1.alpha.test.", "A")] == "127.10.0.25"
    assert additional[("mx2.alpha.test.", "A")] == "127.10.0.26"
    assert additional[("ns.alpha.test.", "A")] == "127.10.0.53"


def test_nxdomain_nodata_and_empty_non_terminal(node: DnsNode) -> None:
    for name, rdtype, expected in (
        ("nope.alpha.test", "A", "NXDOMAIN"),
        ("mx1.alpha.test", "TXT", "NOERROR"),
        ("_tcp.alpha.test", "SRV", "NOERROR"),
    ):
        out = dig(node, name, rdtype)
        status, flags = header(out)
        assert status == expected and "aa" in flags, out
        assert not section(out, "ANSWER")
        (soa,) = section(out, "AUTHORITY")
        assert soa[3] == "SOA" and soa[1] == "60"  # min(600, minimum 60)


def test_cname_followed_and_case_echoed(node: DnsNode) -> None:
    out = dig(node, "CHAIN.Alpha.Test", "A")
    assert ";CHAIN.Alpha.Test." in out
    answer = section(out, "ANSWER")
    assert [r[3] for r in answer] == ["CNAME", "CNAME", "A"]
    assert answer[0][0].lower() == "chain.alpha.test." and answer[-1][-1] == "127.10.0.25"


def test_refused_outside_lab_zones(node: DnsNode) -> None:
    status, flags = header(dig(node, "example.com", "A"))
    assert status == "REFUSED" and "aa" not in flags


def test_notimp_for_notify_and_formerr_for_garbage(node: DnsNode) -> None:
    status, _ = header(dig(node, "+opcode=notify", "alpha.test", "SOA"))
    assert status == "NOTIMP"
    query = dns.message.make_query("alpha.test", "MX").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(query[:-2], (node.address, node.port))
        reply = sock.recv(4096)
    assert reply[:2] == query[:2] and reply[3] & 0xF == dns.rcode.FORMERR


def test_edns_echo_badvers_and_truncation(node: DnsNode) -> None:
    out = dig(node, "+bufsize=4096", "+dnssec", "alpha.test", "MX")
    assert re.search(r"EDNS: version: 0, flags: do; udp: 1232", out), out
    status, _ = header(dig(node, "+edns=1", "+noednsnegotiation", "alpha.test", "MX"))
    assert status == "BADVERS"
    status, flags = header(dig(node, "+noedns", "+ignore", "many.big.test", "TXT"))
    assert "tc" in flags
    out = dig(node, "+bufsize=1232", "many.big.test", "TXT")
    assert "tc" not in header(out)[1] and len(section(out, "ANSWER")) == 12
    out = dig(node, "+noedns", "many.big.test", "TXT")  # TC, then dig retries over TCP
    assert "(TCP)" in out and len(section(out, "ANSWER")) == 12


def test_tcp_pipelined_queries_on_one_connection(node: DnsNode) -> None:
    names = ["alpha.test", "mx1.alpha.test", "nope.alpha.test", "beta.test"]
    queries = [dns.message.make_query(n, "MX") for n in names]
    with socket.create_connection((node.address, node.port), timeout=5) as sock:
        sock.sendall(
            b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries))
        )
        stream = sock.makefile("rb")
        replies = []
        for _ in queries:
            length = int.from_bytes(stream.read(2), "big")
            replies.append(dns.message.from_wire(stream.read(length)))
    assert [r.id for r in replies] == [q.id for q in queries]
    rcodes = [dns.rcode.to_text(r.rcode()) for r in replies]
    assert rcodes == ["NOERROR", "NOERROR", "NXDOMAIN", "NOERROR"]


def test_kdig_over_tcp(node: DnsNode) -> None:
    kdig = need("kdig")
    out = subprocess.run(
        [kdig, f"@{node.address}", "-p", str(node.port), "+tcp", "mx2.alpha.test", "AAAA"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    assert "status: NOERROR" in out and "fd00::26" in out, out


def test_axfr_over_tcp_and_refused_over_udp(node: DnsNode) -> None:
    out = dig(node, "alpha.test", "AXFR")
    records = [line.split() for line in out.splitlines() if line and not line.startswith(";")]
    assert records[0][3] == "SOA" and records[-1] == records[0]
    assert len(records) == len(forward_zone().records) + 1  # and the closing SOA
    query = dns.message.make_query("alpha.test", "AXFR").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(query, (node.address, node.port))
        assert dns.message.from_wire(sock.recv(4096)).rcode() == dns.rcode.REFUSED


def test_faults_reload_on_sighup(tmp_path: Path) -> None:
    node = DnsNode(tmp_path)
    try:
        write_faults(node.state_dir, servfail=["beta.test"], timeout=["mx1.alpha.test"])
        node.signal_hup()
        wait_for(lambda: node.events("faults_loaded"), what="the faults reload")
        assert header(dig(node, "beta.test", "MX"))[0] == "SERVFAIL"
        assert "timed out" in dig(node, "+time=1", "mx1.alpha.test", "A")
        assert header(dig(node, "mx2.alpha.test", "A"))[0] == "NOERROR"
        write_faults(node.state_dir, drop_mx=["alpha.test"])
        node.signal_hup()
        wait_for(lambda: len(node.events("faults_loaded")) == 2, what="the second reload")
        out = dig(node, "alpha.test", "MX")
        assert header(out)[0] == "NOERROR" and not section(out, "ANSWER")
        assert header(dig(node, "beta.test", "MX"))[0] == "NOERROR"
        (node.state_dir / "faults.json").write_text("{not json")
        node.signal_hup()
        wait_for(lambda: node.events("faults_error"), what="the bad file reported")
        assert not section(dig(node, "alpha.test", "MX"), "ANSWER")  # old faults kept
    finally:
        node.stop()


def test_faults_file_is_read_on_start(tmp_path: Path) -> None:
    write_faults(tmp_path / "state", servfail=["Alpha.Test"])
    node = DnsNode(tmp_path)
    try:
        assert node.events("faults_loaded")[0]["servfail"] == ["alpha.test."]
        assert header(dig(node, "alpha.test", "SOA"))[0] == "SERVFAIL"
        assert header(dig(node, "beta.test", "SOA"))[0] == "NOERROR"
    finally:
        node.stop()


def test_planned_lab_zones_are_served(tmp_path: Path) -> None:
    """The planner's zones for a shipped topology: MX, the MX hosts' A, PTR, apex SOA."""
    topology = load_topology(TOPOLOGIES / "two-domains.yaml")
    plan = make_plan(topology, runtime="local", lab_dir=tmp_path / "lab")
    node = DnsNode(tmp_path, zones=plan.zones)
    try:
        for domain in plan.domains:
            assert len(dig(node, "+short", domain, "SOA").split()) == 7  # mxlab.lab.ready
            mx = dig(node, "+short", domain, "MX").split()
            assert mx, domain
            host = plan.node_by_fqdn(mx[1])
            assert host is not None
            assert dig(node, "+short", host.fqdn, "A").strip() == host.address
            ptr = dig(node, "+short", "-x", host.address).strip()
            assert ptr == host.fqdn + "."
    finally:
        node.stop()
