"""The sans-IO DNS core without sockets: queries built and replies read with dnspython,
an independent implementation of the wire format."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from mxlab.dns.answer import MAX_UDP, Responder
from mxlab.dns.faults import Faults
from tests.test_dns_support import lab_zones


@pytest.fixture(scope="module")
def responder() -> Responder:
    return Responder(lab_zones())


def ask(
    responder: Responder, name: str, rdtype: str = "A", tcp: bool = False, **kw: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)
    replies = responder.respond(query.to_wire(), tcp=tcp)
    assert len(replies) == 1
    reply = dns.message.from_wire(replies[0])
    assert reply.id == query.id
    return reply


def rrset(reply: dns.message.Message, section: str, name: str, rdtype: str) -> set[str]:
    for rrs in getattr(reply, section):
        if rrs.name == dns.name.from_text(name) and rrs.rdtype == dns.rdatatype.from_text(rdtype):
            return {r.to_text() for r in rrs}
    return set()


def test_positive_mx_answer_is_authoritative_with_ns_and_addresses(responder: Responder) -> None:
    reply = ask(responder, "alpha.test", "MX")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert rrset(reply, "answer", "alpha.test.", "MX") == {
        "10 mx1.alpha.test.",
        "20 mx2.alpha.test.",
    }
    assert rrset(reply, "authority", "alpha.test.", "NS") == {"ns.alpha.test."}
    assert rrset(reply, "additional", "mx1.alpha.test.", "A") == {"127.10.0.25"}
    assert rrset(reply, "additional", "mx2.alpha.test.", "AAAA") == {"fd00::26"}
    assert rrset(reply, "additional", "ns.alpha.test.", "A") == {"127.10.0.53"}


def test_ns_query_has_glue_and_no_authority_copy(responder: Responder) -> None:
    reply = ask(responder, "alpha.test", "NS")
    assert rrset(reply, "answer", "alpha.test.", "NS") == {"ns.alpha.test."}
    assert not reply.authority
    assert rrset(reply, "additional", "ns.alpha.test.", "A") == {"127.10.0.53"}


def test_address_in_answer_is_not_repeated_in_additional(responder: Responder) -> None:
    reply = ask(responder, "ns.alpha.test", "A")
    assert rrset(reply, "answer", "ns.alpha.test.", "A") == {"127.10.0.53"}
    assert not rrset(reply, "additional", "ns.alpha.test.", "A")


def test_nxdomain_has_soa_with_negative_ttl(responder: Responder) -> None:
    reply = ask(responder, "nope.alpha.test", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA and not reply.answer
    (soa,) = reply.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == min(600, 60)  # RFC 2308 §3: min(SOA TTL, SOA minimum)


def test_nodata_for_missing_type_and_for_empty_non_terminal(responder: Responder) -> None:
    for name, rdtype in (("mx1.alpha.test", "MX"), ("_tcp.alpha.test", "A")):
        reply = ask(responder, name, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, name
        assert not reply.answer
        assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]
        assert reply.authority[0].ttl == 60


def test_negative_ttl_uses_soa_ttl_when_smaller(responder: Responder) -> None:
    reply = ask(responder, "nope.beta.test", "A")  # SOA TTL 300, minimum 120
    assert reply.authority[0].ttl == 120


def test_cname_is_followed_inside_the_zone(responder: Responder) -> None:
    reply = ask(responder, "chain.alpha.test", "A")
    assert rrset(reply, "answer", "chain.alpha.test.", "CNAME") == {"www.alpha.test."}
    assert rrset(reply, "answer", "www.alpha.test.", "CNAME") == {"mx1.alpha.test."}
    assert rrset(reply, "answer", "mx1.alpha.test.", "A") == {"127.10.0.25"}


def test_cname_to_a_missing_name_is_nxdomain(responder: Responder) -> None:
    dangling = ask(responder, "dangling.alpha.test", "A")
    assert dangling.rcode() == dns.rcode.NXDOMAIN  # RFC 6604 §3
    assert rrset(dangling, "answer", "dangling.alpha.test.", "CNAME")


def test_cname_is_followed_into_our_other_zones_only(responder: Responder) -> None:
    """RFC 1034 §4.3.2 step 3a, as NSD: the target's zone supplies authority and SOA."""
    other = ask(responder, "outside.alpha.test", "A")
    assert rrset(other, "answer", "mx.beta.test.", "A") == {"127.10.0.27"}
    assert rrset(other, "authority", "beta.test.", "NS") == {"ns.alpha.test."}
    nodata = ask(responder, "outside.alpha.test", "TXT")
    assert [r.name.to_text() for r in nodata.authority] == ["beta.test."]
    external = ask(responder, "ext.alpha.test", "A")
    assert external.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in external.answer] == [dns.rdatatype.CNAME]


def test_cname_query_is_not_followed(responder: Responder) -> None:
    reply = ask(responder, "www.alpha.test", "CNAME")
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME]


def test_names_are_case_insensitive_and_question_case_is_echoed(responder: Responder) -> None:
    query = dns.message.make_query("MX1.Alpha.TEST", "A")
    reply = dns.message.from_wire(responder.respond(query.to_wire())[0])
    raw = responder.respond(query.to_wire())[0]
    assert b"\x03MX1\x05Alpha\x04TEST\x00" in raw
    assert {r.to_text() for r in reply.answer[0]} == {"127.10.0.25"}


def test_outside_our_zones_is_refused(responder: Responder) -> None:
    reply = ask(responder, "example.com", "A")
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA and not reply.answer


def test_delegation_below_a_zone_is_a_referral_with_glue(responder: Responder) -> None:
    reply = ask(responder, "host.sub.alpha.test", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.flags & dns.flags.AA and not reply.answer
    assert rrset(reply, "authority", "sub.alpha.test.", "NS") == {"ns.sub.alpha.test."}
    assert rrset(reply, "additional", "ns.sub.alpha.test.", "A") == {"127.10.0.54"}


def test_wildcard_synthesis(responder: Responder) -> None:
    """RFC 4592: names under the closest encloser are synthesized from ``*``."""
    for name in ("x.wild.alpha.test", "a.b.wild.alpha.test"):
        assert rrset(ask(responder, name), "answer", f"{name}.", "A") == {"127.10.0.28"}
    assert not ask(responder, "x.wild.alpha.test", "TXT").answer  # NODATA
    assert ask(responder, "wild.alpha.test").rcode() == dns.rcode.NOERROR  # an ENT
    assert ask(responder, "x.mx1.alpha.test").rcode() == dns.rcode.NXDOMAIN


def test_reverse_zone_ptr(responder: Responder) -> None:
    reply = ask(responder, "25.0.10.127.in-addr.arpa", "PTR")
    assert rrset(reply, "answer", "25.0.10.127.in-addr.arpa.", "PTR") == {"mx1.alpha.test."}


def test_rd_and_cd_bits_are_copied(responder: Responder) -> None:
    query = dns.message.make_query("mx1.alpha.test", "A")
    query.flags = dns.flags.CD  # no RD
    reply = dns.message.from_wire(responder.respond(query.to_wire())[0])
    assert not reply.flags & dns.flags.RD and reply.flags & dns.flags.CD
    query.flags = dns.flags.RD
    reply = dns.message.from_wire(responder.respond(query.to_wire())[0])
    assert reply.flags & dns.flags.RD and not reply.flags & dns.flags.CD


def test_edns_opt_is_echoed_with_our_size_and_do_bit(responder: Responder) -> None:
    reply = ask(responder, "alpha.test", "MX", use_edns=0, payload=4096, want_dnssec=True)
    assert reply.edns == 0 and reply.payload == MAX_UDP
    assert reply.ednsflags & dns.flags.DO
    plain = ask(responder, "alpha.test", "MX")
    assert plain.edns == -1


def test_edns_version_above_zero_is_badvers(responder: Responder) -> None:
    reply = ask(responder, "alpha.test", "MX", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0 and not reply.answer


def test_truncation_follows_the_payload_size(responder: Responder) -> None:
    classic = ask(responder, "many.big.test", "TXT")
    assert classic.flags & dns.flags.TC and not classic.answer
    small = ask(responder, "many.big.test", "TXT", use_edns=0, payload=100)  # floor: 512
    assert small.flags & dns.flags.TC
    edns = ask(responder, "many.big.test", "TXT", use_edns=0, payload=1232)
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 12
    tcp = ask(responder, "many.big.test", "TXT", tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 12


def test_additional_records_are_dropped_before_truncating(responder: Responder) -> None:
    """RFC 2181 §9: no TC when only optional additional data is left out."""
    full = responder.respond(dns.message.make_query("alpha.test", "MX").to_wire())[0]
    zones = lab_zones()
    many_mx = zones[0].model_copy(
        update={
            "records": [
                *zones[0].records,
                *[
                    zones[0].records[2].model_copy(update={"rdata": f"{30 + i} mx{i}.alpha.test."})
                    for i in range(3, 16)
                ],
                *[
                    zones[0].records[6].model_copy(update={"name": f"mx{i}.alpha.test."})
                    for i in range(3, 16)
                ],
            ]
        }
    )
    big = Responder([many_mx, *zones[1:]])
    reply = dns.message.from_wire(
        big.respond(dns.message.make_query("alpha.test", "MX").to_wire())[0]
    )
    assert len(full) < 512
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == 15
    assert len(reply.to_wire()) <= 512
    assert 0 < len(reply.additional) < 15


def test_formerr_for_malformed_queries(responder: Responder) -> None:
    good = dns.message.make_query("alpha.test", "MX").to_wire()
    truncated = good[:-3]
    (reply,) = responder.respond(truncated)
    assert dns.rcode.from_flags(int.from_bytes(reply[2:4], "big"), 0) == dns.rcode.FORMERR
    assert reply[:2] == good[:2]
    no_question = good[:4] + b"\x00\x00" + good[6:12]
    (reply,) = responder.respond(no_question)
    assert reply[3] & 0xF == dns.rcode.FORMERR
    two_opts = dns.message.make_query("alpha.test", "MX", use_edns=0).to_wire()
    opt = two_opts[len(good) :]
    doubled = two_opts[:10] + b"\x00\x02" + two_opts[12:] + opt
    (reply,) = responder.respond(doubled)
    assert reply[3] & 0xF == dns.rcode.FORMERR


def test_notimp_for_other_opcodes(responder: Responder) -> None:
    for opcode in (dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS):
        query = dns.message.make_query("alpha.test", "SOA")
        query.set_opcode(opcode)
        reply = dns.message.from_wire(responder.respond(query.to_wire())[0])
        assert reply.rcode() == dns.rcode.NOTIMP
        assert reply.opcode() == opcode


def test_responses_and_runts_get_no_reply(responder: Responder) -> None:
    reply = ask(responder, "alpha.test", "MX")
    assert responder.respond(reply.to_wire()) == []
    assert responder.respond(b"\x12\x34\x01") == []


def test_non_in_class_is_refused(responder: Responder) -> None:
    reply = ask(responder, "version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert reply.rcode() == dns.rcode.REFUSED


def test_axfr_over_tcp_is_the_whole_zone_between_soas(responder: Responder) -> None:
    query = dns.message.make_query("alpha.test", "AXFR")
    wires = responder.respond(query.to_wire(), tcp=True)
    replies = [dns.message.from_wire(m, one_rr_per_rrset=True) for m in wires]
    records = [rrs for reply in replies for rrs in reply.answer]
    flat = [(rrs.name.to_text(), rrs.rdtype, r.to_text()) for rrs in records for r in rrs]
    assert flat[0][1] == dns.rdatatype.SOA and flat[-1] == flat[0]
    assert len(flat) == len(lab_zones()[0].records) + 1
    assert ("www.alpha.test.", dns.rdatatype.CNAME, "mx1.alpha.test.") in flat


def test_authority_records_are_formerr_except_an_ixfr_soa(responder: Responder) -> None:
    soa = dns.rrset.from_text("alpha.test.", 300, "IN", "SOA", "ns. h. 1 2 3 4 5")
    ixfr = dns.message.make_query("alpha.test", "IXFR")
    ixfr.authority.append(soa)
    answers = [dns.message.from_wire(r) for r in responder.respond(ixfr.to_wire(), tcp=True)]
    assert answers[0].rcode() == dns.rcode.NOERROR
    assert answers[0].answer[0].rdtype == dns.rdatatype.SOA  # the full zone, SOA first
    other = dns.message.make_query("alpha.test", "A")
    other.authority.append(soa)
    (reply,) = responder.respond(other.to_wire(), tcp=True)
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_axfr_over_udp_or_below_the_apex_is_refused(responder: Responder) -> None:
    reply = ask(responder, "alpha.test", "AXFR")
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    reply = ask(responder, "mx1.alpha.test", "AXFR", tcp=True)
    assert reply.rcode() == dns.rcode.REFUSED


def test_fast_path_agrees_with_the_slow_path(responder: Responder) -> None:
    """Every template gives the bytes dnslib builds for the same query."""
    names = ["alpha.test", "Mx2.alpha.test", "_tcp.alpha.test", "www.alpha.test", "nope.alpha.test"]
    for name in names:
        for rdtype in ("A", "AAAA", "MX", "NS", "SOA", "TXT", "CNAME", "SRV"):
            for kw in ({}, {"use_edns": 0, "payload": 1232, "want_dnssec": True}):
                wire = dns.message.make_query(name, rdtype, **kw).to_wire()
                fast = responder._fast(wire, False)
                assert fast is not None, (name, rdtype)
                assert fast == responder._slow(wire, False), (name, rdtype, kw)


def test_faults_servfail_timeout_and_drop_mx() -> None:
    faults = Faults.of(servfail=["beta.test"], timeout=["MX1.alpha.test."], drop_mx=["alpha.test"])
    responder = Responder(lab_zones(), faults)
    assert ask(responder, "beta.test", "MX").rcode() == dns.rcode.SERVFAIL
    assert ask(responder, "mx.beta.test", "A").rcode() == dns.rcode.NOERROR
    assert responder.respond(dns.message.make_query("mx1.alpha.test", "A").to_wire()) == []
    nodata = ask(responder, "alpha.test", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(responder, "alpha.test", "TXT").answer
