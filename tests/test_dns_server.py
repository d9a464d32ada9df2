"""The DNS node as a process (``python -m mxlab.nodes dns``), asked with dig and kdig
over UDP and TCP: every authoritative behaviour, on 127.10.x.y."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from mxlab.dns.faults import write_faults
from mxlab.nodes.config import DnsRecord
from tests.test_dns_support import DnsNode, dig, forward_zone, need, rich_plan, wait_for


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
    assert answer[0][0] == "CHAIN.Alpha.Test." and answer[-1][-1] == "127.10.0.25"
    out = dig(node, "MX1.ALPHA.TEST", "A")  # RFC 4343 §3: any case finds the name
    assert header(out)[0] == "NOERROR" and section(out, "ANSWER")[0][0] == "MX1.ALPHA.TEST."


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


def test_ns_with_glue_at_the_apex_and_in_a_referral(node: DnsNode) -> None:
    out = dig(node, "alpha.test", "NS")
    assert header(out) == ("NOERROR", {"qr", "aa", "rd"})
    assert [r[3:] for r in section(out, "ANSWER")] == [["NS", "ns.alpha.test."]]
    assert [r[0] for r in section(out, "ADDITIONAL")] == ["ns.alpha.test."]
    # RFC 1034 §4.3.2 3b: below a delegation, no AA, the child's NS and their glue
    out = dig(node, "Host.Sub.alpha.test", "A")
    status, flags = header(out)
    assert status == "NOERROR" and "aa" not in flags and not section(out, "ANSWER")
    # names compress onto the question, so they come back in its spelling
    authority = [[f.lower() for f in r] for r in section(out, "AUTHORITY")]
    assert authority == [["sub.alpha.test.", "300", "in", "ns", "ns.sub.alpha.test."]]
    additional = [[f.lower() for f in r] for r in section(out, "ADDITIONAL")]
    assert additional == [["ns.sub.alpha.test.", "300", "in", "a", "127.10.0.54"]]


def test_formerr_for_a_query_without_a_question(node: DnsNode) -> None:
    out = dig(node, "+header-only", "alpha.test")
    assert header(out)[0] == "FORMERR" and "QUERY: 0, ANSWER: 0" in out


def test_udp_payload_size_is_honoured(node: DnsNode) -> None:
    """RFC 6891 §6.2.5: the requestor's size, never under 512, never over our 1232."""
    for size, truncated in ((600, True), (1000, True), (1232, False), (4096, False)):
        out = dig(node, f"+bufsize={size}", "+ignore", "many.big.test", "TXT")
        assert ("tc" in header(out)[1]) is truncated, (size, out)
        assert len(section(out, "ANSWER")) == (0 if truncated else 12)
        assert re.search(r"EDNS: version: 0, flags:; udp: 1232", out)


def test_dig_keeps_one_tcp_connection_open_for_several_queries(node: DnsNode) -> None:
    args = ["+tcp", "+keepopen", "alpha.test", "MX", "beta.test", "MX", "nope.alpha.test", "A"]
    out = dig(node, *args)
    assert re.findall(r"status: (\w+)", out) == ["NOERROR", "NOERROR", "NXDOMAIN"], out


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


def test_ixfr_is_answered_with_the_full_zone(node: DnsNode) -> None:
    """RFC 1995 §4: a server may answer IXFR with a full zone transfer; dig sends its
    SOA (serial 1) in the authority section, which must not be a FORMERR."""
    out = dig(node, "alpha.test", "IXFR=1")
    assert "Transfer failed" not in out and "FORMERR" not in out, out
    records = [line.split() for line in out.splitlines() if line and not line.startswith(";")]
    assert records[0][3] == "SOA" and records[-1] == records[0]
    assert len(records) == len(forward_zone().records) + 1
    udp = dig(node, "+notcp", "alpha.test", "IXFR=1")  # over UDP: our SOA alone (§4)
    soas = [line for line in udp.splitlines() if "\tSOA\t" in line and not line.startswith(";")]
    assert len(soas) == 1 and "FORMERR" not in udp, udp


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


def test_topology_records_are_served(tmp_path: Path) -> None:
    """Every record a topology makes: SOA and NS per zone, an A for every node and a PTR
    that maps back to it (forward-confirmed reverse DNS), MX by preference, TXT, and the
    extra records it declares."""
    plan = rich_plan(tmp_path / "lab")
    node = DnsNode(tmp_path, zones=plan.zones)
    try:
        for zone in plan.zones:
            soa = dig(node, "+short", zone.origin, "SOA").split()
            assert soa[:2] == ["ns.alpha.test.", f"hostmaster.{zone.origin}"], zone.origin
            assert dig(node, "+short", zone.origin, "NS").split() == ["ns.alpha.test."]
        for host in plan.nodes.values():
            assert dig(node, "+short", host.fqdn, "A").split() == [host.address]
            assert dig(node, "+short", "-x", host.address).split() == [host.fqdn + "."]
        beta_mx = dig(node, "+short", "beta.test", "MX").splitlines()
        assert sorted(beta_mx) == ["10 mx1.beta.test.", "20 mx2.beta.test."]
        assert dig(node, "+short", "alpha.test", "MX").split() == ["10", "mx-alpha.alpha.test."]
        assert dig(node, "+short", "alpha.test", "TXT").strip() == '"v=spf1 mx -all"'
        extra = {
            ("_dmarc.alpha.test", "TXT"): ['"v=DMARC1; p=reject"'],
            ("www.alpha.test", "A"): ["127.0.0.80"],
            ("www.alpha.test", "AAAA"): ["fd00::80"],
            ("webmail.alpha.test", "A"): ["imap.alpha.test.", plan.nodes["store-alpha"].address],
            ("_submission._tcp.alpha.test", "SRV"): ["0 1 587 mx-alpha.alpha.test."],
            ("alpha.test", "CAA"): ['0 issue "ca.alpha.test"'],
            ("lists.beta.test", "MX"): ["5 mx2.beta.test."],
            ("host.beta.test", "PTR"): ["mx1.beta.test."],
        }
        for (name, rdtype), want in extra.items():
            assert dig(node, "+short", name, rdtype).splitlines() == want, (name, rdtype)
        assert section(dig(node, "www.alpha.test", "A"), "ANSWER")[0][1] == "60"  # its TTL
        referral = dig(node, "x.sub.beta.test", "A")
        assert [r[-1] for r in section(referral, "AUTHORITY")] == ["ns.sub.beta.test."]
        assert [r[-1] for r in section(referral, "ADDITIONAL")] == ["127.0.0.54"]
    finally:
        node.stop()


def test_a_zone_that_does_not_load_is_one_line(tmp_path: Path) -> None:
    """Bad RDATA or a CNAME beside other data: the node says which record, and exits."""
    zone = forward_zone()
    zone.records.append(DnsRecord(name="mx1.alpha.test.", type="CNAME", rdata="www"))
    with pytest.raises(AssertionError, match="DNS node exited"):
        DnsNode(tmp_path, zones=[zone])
    (event,) = [json.loads(line) for line in (tmp_path / "dns.log").read_text().splitlines()]
    assert event["event"] == "zone_error" and "mx1.alpha.test. has a CNAME" in event["error"]
