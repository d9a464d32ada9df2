"""The DNS node's cache of whole UDP replies: a repeated query gets the reply the
responder computes, with its own ID, spelling and flags; a SIGHUP reload drops it."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from mxlab.dns import answer
from mxlab.dns.answer import Responder
from mxlab.dns.faults import write_faults
from tests.test_dns_support import DnsNode, lab_zones, wait_for


def query(name: str, rdtype: str = "A", qid: int = 1, rd: bool = True, edns: bool = True) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else None)
    q.id = qid
    if not rd:
        q.flags &= ~dns.flags.RD
    return q.to_wire()


@pytest.fixture
def cached() -> Responder:
    """A responder that has answered each query below once, and is refused a second
    computation: what it answers next must come from its cache."""
    responder = Responder(lab_zones())
    for wire in (query("mx1.alpha.test"), query("MX1.Alpha.TEST"), query("alpha.test", "MX")):
        responder.respond(wire)
    responder._fast = responder._slow = None  # type: ignore[assignment,method-assign]
    return responder


def test_repeated_query_is_answered_from_the_cache_with_its_own_id(cached: Responder) -> None:
    for qid in (2, 0xBEEF):
        wire = query("alpha.test", "MX", qid=qid)
        (reply,) = cached.respond(wire)
        assert reply == Responder(lab_zones()).respond(wire)[0]
        assert dns.message.from_wire(reply).id == qid


def test_cached_reply_keeps_each_querys_spelling(cached: Responder) -> None:
    for name in ("mx1.alpha.test", "MX1.Alpha.TEST"):
        (reply,) = cached.respond(query(name, qid=7))
        assert str(dns.message.from_wire(reply).question[0].name) == name + "."


def test_flags_and_edns_are_part_of_the_key() -> None:
    responder = Responder(lab_zones())
    responder.respond(query("mx1.alpha.test"))
    for wire in (query("mx1.alpha.test", rd=False), query("mx1.alpha.test", edns=False)):
        reply = dns.message.from_wire(responder.respond(wire)[0])
        asked = dns.message.from_wire(wire)
        assert bool(reply.flags & dns.flags.RD) == bool(asked.flags & dns.flags.RD)
        assert reply.edns == asked.edns


def test_a_full_cache_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answer, "REPLY_CACHE_LIMIT", 1)
    responder = Responder(lab_zones())
    names = ["mx1.alpha.test", "mx2.alpha.test", "mx1.alpha.test", "mx2.alpha.test"]
    replies = [dns.message.from_wire(responder.respond(query(n))[0]) for n in names]
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR] * 4
    assert [str(r.answer[0].name) for r in replies] == [n + "." for n in names]


def test_sighup_reload_drops_the_cached_replies(tmp_path: Path) -> None:
    node = DnsNode(tmp_path)
    wire = query("mx1.alpha.test", rd=False)

    def ask() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(wire, (node.address, node.port))
            return dns.message.from_wire(sock.recv(4096)).rcode()

    try:
        assert [ask(), ask()] == [dns.rcode.NOERROR] * 2  # the second from the cache
        write_faults(node.state_dir, servfail=["mx1.alpha.test"])
        node.signal_hup()
        wait_for(lambda: node.events("faults_loaded"), what="the faults reload")
        assert ask() == dns.rcode.SERVFAIL
    finally:
        node.stop()


def test_a_flood_of_misses_leaves_the_zones_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Templates are made on first sight; names outside the zones only up to a bound,
    which a flood of them cannot use up for the names the zones hold."""
    monkeypatch.setattr(answer, "LEARNED_LIMIT", 2)
    responder = Responder(lab_zones())
    misses = [query(f"nope{i}.alpha.test") for i in range(3)]
    assert [responder._fast(w, False) is not None for w in misses] == [True, True, False]
    held = query("mx1.alpha.test")
    assert responder._fast(held, False) == responder._slow(held, False)
    assert dns.message.from_wire(responder.respond(misses[2])[0]).rcode() == dns.rcode.NXDOMAIN
