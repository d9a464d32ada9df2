"""Random and mutated packets: the DNS core never raises, always answers in form, and
keeps answering good queries, without sockets and against a running node."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxlab.dns.answer import Responder
from tests.test_dns_support import DnsNode, lab_zones

GOOD = [
    dns.message.make_query("alpha.test", "MX").to_wire(),
    dns.message.make_query("Mx1.Alpha.test", "A", use_edns=0, payload=4096).to_wire(),
    dns.message.make_query("nope.alpha.test", "TXT", want_dnssec=True).to_wire(),
    dns.message.make_query("many.big.test", "TXT").to_wire(),
    dns.message.make_query("alpha.test", "AXFR").to_wire(),
]
RESPONDER = Responder(lab_zones())
EXPECTED = RESPONDER.respond(GOOD[0])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GOOD)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[pos] = draw(st.sampled_from([0, 1, 0x29, 0x3F, 0x40, 0xC0, 0xFF]))
    return bytes(data)


PACKETS = st.one_of(st.binary(max_size=700), mutated())


def check_replies(query: bytes, replies: list[bytes], tcp: bool) -> None:
    assert isinstance(replies, list)
    for reply in replies:
        assert isinstance(reply, bytes) and len(reply) >= 12
        assert reply[:2] == query[:2] and reply[2] & 0x80  # our ID, QR set
        assert len(reply) <= (65535 if tcp else max(512, 1232))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PACKETS, st.booleans())
def test_core_never_crashes_and_keeps_answering(packet: bytes, tcp: bool) -> None:
    check_replies(packet, RESPONDER.respond(packet, tcp=tcp), tcp)
    assert RESPONDER.respond(GOOD[0]) == EXPECTED


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsNode]:
    node = DnsNode(Path(tmp_path_factory.mktemp("dnsfuzz")))
    yield node
    node.stop()


def ask_udp(node: DnsNode, wire: bytes) -> dns.message.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, (node.address, node.port))
        return dns.message.from_wire(sock.recv(65535))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(PACKETS, min_size=1, max_size=10))
def test_live_server_survives_garbage(node: DnsNode, packets: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for packet in packets:
            udp.sendto(packet, (node.address, node.port))
    with socket.create_connection((node.address, node.port), timeout=3) as tcp:
        tcp.sendall(b"".join(len(p).to_bytes(2, "big") + p for p in packets if len(p) < 65536))
    reply = ask_udp(node, GOOD[0])
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert {r.to_text() for r in reply.answer[0]} == {"10 mx1.alpha.test.", "20 mx2.alpha.test."}
    assert node.proc.poll() is None
