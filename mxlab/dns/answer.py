"""The DNS node's sans-IO core: query bytes in, reply messages out, no sockets.

The answer to each (name, type) asked is packed once, on first sight, into a wire
template; a well-formed query then costs a dictionary lookup plus patching the ID, the
question's spelling, RD/CD and the EDNS OPT record. Anything unusual (EDNS versions
above 0, truncation, zone transfers, malformed packets) takes the slow path through
dnslib, which builds the same answers from the same lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dnslib import (
    CLASS,
    EDNS0,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    DNSBuffer,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from mxlab.dns.faults import Faults
from mxlab.dns.lookup import Lookup, Outcome
from mxlab.dns.zones import ZoneData, load_zone, name_key
from mxlab.nodes.config import Zone

MAX_UDP = 1232  # our EDNS UDP payload size (DNS flag day 2020), as NSD's default
CLASSIC_UDP = 512  # RFC 1035 §4.2.1, and the floor of RFC 6891 §6.2.5
MAX_TCP = 65535  # RFC 1035 §4.2.2 length prefix
BADVERS = 16  # RFC 6891 §9: extended RCODE, upper 8 bits in the OPT TTL
# the types a name the zones hold is always templated for (others: those it has)
HELD_TYPES = (
    QTYPE.A, QTYPE.AAAA, QTYPE.MX, QTYPE.NS, QTYPE.SOA, QTYPE.TXT,
    QTYPE.CNAME, QTYPE.PTR, QTYPE.SRV, QTYPE.CAA,
)  # fmt: skip
LEARNED_LIMIT = 20_000  # templates added at run time for names outside the zones
REPLY_CACHE_LIMIT = 50_000  # distinct UDP queries whose whole reply is kept (~10 MB)
TRANSFER_TYPES = (QTYPE.AXFR, QTYPE.IXFR)
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT=1, ANCOUNT=0, NSCOUNT=0
_CLASS_IN = b"\x00\x01"
_OPT_TYPE = b"\x00\x29"
_DROP = object()  # the timeout fault: no reply at all


@dataclass(frozen=True)
class _Template:
    """One packed reply: headers by (RD, CD) bits, and the bytes after the question."""

    heads: tuple[bytes, ...]  # flags + counts, indexed by RD | CD << 1
    heads_edns: tuple[bytes, ...]  # the same with ARCOUNT + 1 for our OPT
    tail: bytes
    tails_edns: tuple[bytes, bytes]  # tail + our OPT, by the query's DO bit


class Responder:
    """Answers queries for the given zones as their authoritative server."""

    def __init__(
        self, zones: list[Zone], faults: Faults | None = None, max_udp: int = MAX_UDP
    ) -> None:
        self.max_udp = max_udp
        self.zones: list[ZoneData] = [load_zone(z) for z in zones]
        self.lookup = Lookup(self.zones, faults)
        self._opt = tuple(_packed(self._opt_rr(do)) for do in (False, True))
        # Templates are made on first sight, not all up front: a 100-domain lab's 9,000
        # took its DNS node 1 s of CPU at start (on the lab's critical path) and on
        # every reload, most for names nobody asks.
        self._table: dict[bytes, _Template | object] = {}
        self._learned = 0  # templates for what the zones do not hold, bounded
        self._replies: dict[bytes, bytes] = {}  # UDP query after its ID -> reply after its ID

    # -- the fast path ---------------------------------------------------------------

    def respond(self, wire: bytes | bytearray, tcp: bool = False) -> list[bytes]:
        """Reply messages for one query (none: drop it; several: an AXFR stream).

        A UDP query seen before, byte for byte after its ID (flags, the name as the
        client spelled it, type, EDNS size and DO bit), gets the same reply again with
        its own ID: one dictionary lookup. The cache belongs to this responder, so a
        reload (a new Responder) starts a new one."""
        wire = bytes(wire)  # a no-op for the bytes sockets give; hashable for the table
        if not tcp:
            seen = self._replies.get(wire[2:])
            if seen is not None:
                return [wire[:2] + seen] if seen else []
        fast = self._fast(wire, tcp)
        if fast is None:
            return [bytes(m) for m in self._slow(wire, tcp)]
        if not tcp and len(self._replies) < REPLY_CACHE_LIMIT:
            self._replies[wire[2:]] = fast[0][2:] if fast else b""  # b"": dropped
        return fast

    def _fast(self, wire: bytes, tcp: bool) -> list[bytes] | None:
        n = len(wire)
        # QR=0, OPCODE=QUERY, AA=TC=0; one question, no answer/authority, ARCOUNT 0 or 1
        if n < 17 or wire[2] & 0xFE or wire[4:10] != _ONE_QUESTION or wire[10]:
            return None
        i = 12
        while i < n:
            length = wire[i]
            if length == 0:
                break
            if length > 63:  # a compression pointer in a question: let dnslib decide
                return None
            i += length + 1
        qend = i + 5
        if qend > n or wire[i + 3 : qend] != _CLASS_IN:
            return None
        # label length bytes are <= 63, so bytes.lower() only folds ASCII letters
        key = wire[12 : i + 1].lower() + wire[i + 1 : i + 3]
        template = self._table.get(key) or self._learn(key)
        if template is None:
            return None
        if not isinstance(template, _Template):  # _DROP, the timeout fault
            return []
        bits = (wire[2] & 1) | ((wire[3] >> 3) & 2)  # RD (RFC 1035 §4.1.1), CD (RFC 4035)
        arcount = wire[11]
        if arcount == 0:
            if qend != n:
                return None
            reply = b"".join((wire[:2], template.heads[bits], wire[12:qend], template.tail))
            limit = MAX_TCP if tcp else CLASSIC_UDP
        elif arcount == 1:
            # the one additional record must be a version-0 OPT with nothing after it
            if (
                n - qend < 11
                or wire[qend] != 0
                or wire[qend + 1 : qend + 3] != _OPT_TYPE
                or wire[qend + 6] != 0
                or n - qend != 11 + int.from_bytes(wire[qend + 9 : qend + 11], "big")
            ):
                return None
            tail = template.tails_edns[wire[qend + 7] >> 7]
            reply = b"".join((wire[:2], template.heads_edns[bits], wire[12:qend], tail))
            asked = int.from_bytes(wire[qend + 3 : qend + 5], "big")
            limit = MAX_TCP if tcp else max(CLASSIC_UDP, min(asked, self.max_udp))
        else:
            return None
        return [reply] if len(reply) <= limit else None

    def _learn(self, key: bytes) -> _Template | object | None:
        """Template a question on first sight: always for a name and type the zones can
        be asked about; for anything else (NXDOMAIN, REFUSED...) up to a bound, so a
        flood of misses costs no more than hits and cannot grow the table for ever."""
        qtype = int.from_bytes(key[-2:], "big")
        if qtype in TRANSFER_TYPES:
            return None
        labels, i = [], 0
        while key[i]:
            labels.append(key[i + 1 : i + 1 + key[i]])
            i += key[i] + 1
        qname = DNSLabel(labels)
        held = self._holds(name_key(qname), qtype)
        if not held:
            if self._learned >= LEARNED_LIMIT:
                return None
            self._learned += 1
        template = self._table[key] = self._template(qname, qtype)
        return template

    def _holds(self, name: str, qtype: int) -> bool:
        zone = self.lookup.zone_for(name)
        return (
            zone is not None
            and name in zone.names
            and (qtype in HELD_TYPES or qtype in zone.rrsets.get(name, {}))
        )

    def _template(self, qname: DNSLabel, qtype: int) -> _Template | object:
        outcome = self.lookup.find(qname, qtype)
        if outcome.drop:
            return _DROP
        header = DNSHeader(id=0, qr=1, aa=int(outcome.aa), ra=0, rcode=outcome.rcode)
        reply = DNSRecord(header, q=DNSQuestion(qname, qtype))
        _add_sections(reply, outcome)
        packed = reply.pack()
        qend = 12 + len(_wire_name(qname)) + 4
        counts = packed[4:12]
        counts_edns = counts[:6] + (int.from_bytes(counts[6:], "big") + 1).to_bytes(2, "big")
        b2, b3 = packed[2] & 0xFE, packed[3] & 0xEF  # RD and CD come from each query
        flags = [bytes((b2 | bits & 1, b3 | (bits & 2) << 3)) for bits in range(4)]
        return _Template(
            heads=tuple(f + counts for f in flags),
            heads_edns=tuple(f + counts_edns for f in flags),
            tail=packed[qend:],
            tails_edns=(packed[qend:] + self._opt[0], packed[qend:] + self._opt[1]),
        )

    # -- the slow path ---------------------------------------------------------------

    def _slow(self, wire: bytes, tcp: bool) -> list[bytes]:
        if len(wire) < 12 or wire[2] & 0x80:
            return []  # no header to answer, or a response: never reply (RFC 1035 §4.1.1)
        try:
            query = DNSRecord.parse(wire)
        except (DNSError, ValueError, IndexError, UnicodeError):
            return [_header_only(wire, RCODE.FORMERR)]
        if query.header.opcode != OPCODE.QUERY:
            return [_header_only(wire, RCODE.NOTIMP)]  # RFC 1035 §4.1.1
        opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
        if len(query.questions) != 1 or query.rr or len(opts) > 1:
            return [_header_only(wire, RCODE.FORMERR)]  # RFC 6891 §6.1.1: one OPT at most
        if query.auth and not _ixfr_soa(query):
            return [_header_only(wire, RCODE.FORMERR)]  # only IXFR carries an authority
        opt = opts[0] if opts else None
        question = query.questions[0]
        reply = DNSRecord(
            DNSHeader(id=query.header.id, qr=1, rd=query.header.rd, opcode=OPCODE.QUERY),
            q=question,
        )
        reply.header.cd = query.header.cd
        if opt is None:
            limit = MAX_TCP if tcp else CLASSIC_UDP
        else:
            limit = MAX_TCP if tcp else max(CLASSIC_UDP, min(opt.edns_len, self.max_udp))
            do = bool(opt.ttl >> 15 & 1)
            if opt.edns_ver != 0:  # RFC 6891 §6.1.3
                reply.add_ar(self._opt_rr(do, ext_rcode=BADVERS >> 4))
                return [reply.pack()]
            reply.add_ar(self._opt_rr(do))
        if question.qclass != CLASS.IN:
            reply.header.rcode = RCODE.REFUSED
            return [reply.pack()]
        if question.qtype in TRANSFER_TYPES:
            return self._transfer(reply, question, tcp)
        outcome = self.lookup.find(question.qname, question.qtype)
        if outcome.drop:
            return []
        reply.header.aa = int(outcome.aa)
        reply.header.rcode = outcome.rcode
        return [_fit(reply, outcome, limit)]

    def _transfer(self, reply: DNSRecord, question: DNSQuestion, tcp: bool) -> list[bytes]:
        """AXFR over TCP only (RFC 5936 §4.2); IXFR is answered with a full zone
        (RFC 1995 §4) on TCP and with the SOA alone over UDP."""
        records = self.lookup.transfer(question.qname)
        if records is None or (not tcp and question.qtype == QTYPE.AXFR):
            reply.header.rcode = RCODE.REFUSED
            return [reply.pack()]
        reply.header.aa = 1
        if not tcp:
            reply.add_answer(records[0])
            return [reply.pack()]
        messages: list[bytes] = []
        chunk: list[RR] = []
        for rr in records:  # RFC 5936 §2.2: as many records per message as fit
            candidate = _with_answers(reply, [*chunk, rr])
            if chunk and len(candidate.pack()) > MAX_TCP:
                messages.append(_with_answers(reply, chunk).pack())
                chunk = []
            chunk.append(rr)
        messages.append(_with_answers(reply, chunk).pack())
        return messages

    def _opt_rr(self, do: bool, ext_rcode: int = 0) -> RR:
        """Our OPT: our payload size, version 0, the DO bit copied (RFC 3225 §3)."""
        return EDNS0(udp_len=self.max_udp, flags="do" if do else "", ext_rcode=ext_rcode)


def _ixfr_soa(query: DNSRecord) -> bool:
    """RFC 1995 §3: an IXFR query carries the client's SOA, one record, in the
    authority section; we answer with the full zone whatever its serial (§4)."""
    auth = query.auth
    return query.q.qtype == QTYPE.IXFR and len(auth) == 1 and auth[0].rtype == QTYPE.SOA


def _packed(rr: RR) -> bytes:
    buffer = DNSBuffer()
    rr.pack(buffer)
    return bytes(buffer.data)


def _wire_name(name: DNSLabel) -> bytes:
    return b"".join(bytes((len(part),)) + part.lower() for part in name.label) + b"\x00"


def _add_sections(reply: DNSRecord, outcome: Outcome) -> None:
    for rr in outcome.answer:
        reply.add_answer(rr)
    for rr in outcome.authority:
        reply.add_auth(rr)
    for rr in outcome.additional:
        reply.add_ar(rr)


def _with_answers(reply: DNSRecord, answers: list[RR]) -> DNSRecord:
    message = DNSRecord(reply.header, questions=reply.questions, ar=reply.ar)
    for rr in answers:
        message.add_answer(rr)
    return message


def _fit(reply: DNSRecord, outcome: Outcome, limit: int) -> bytes:
    """Drop whole RRsets from the additional, then the authority section until the
    reply fits; if the answer itself does not, send it empty with TC set
    (RFC 2181 §9, RFC 1035 §4.2.1)."""
    opt = list(reply.ar)  # our OPT stays last and always goes
    for n_auth, n_add in _shrinking(outcome):
        trial = DNSRecord(reply.header, questions=reply.questions)
        _add_sections(
            trial,
            Outcome(answer=outcome.answer, authority=n_auth, additional=n_add + opt),
        )
        packed = trial.pack()
        if len(packed) <= limit:
            return packed
    reply.header.tc = 1
    return reply.pack()


def _shrinking(outcome: Outcome) -> Iterator[tuple[list[RR], list[RR]]]:
    """(authority, additional) to try, largest first."""
    additional = outcome.additional
    while True:
        yield outcome.authority, additional
        if not additional:
            break
        last = (additional[-1].rname, additional[-1].rtype)
        additional = [rr for rr in additional if (rr.rname, rr.rtype) != last]
    if outcome.rcode == RCODE.NOERROR and outcome.answer and outcome.authority:
        yield [], []  # the NS of a positive answer is optional; a negative SOA is not


def _header_only(wire: bytes, rcode: int) -> bytes:
    """An error reply to a query we cannot or will not read past its header."""
    header = DNSHeader(
        id=int.from_bytes(wire[:2], "big"),
        qr=1,
        opcode=wire[2] >> 3 & 0xF,
        rd=wire[2] & 1,
        rcode=rcode,
    )
    return DNSRecord(header).pack()
