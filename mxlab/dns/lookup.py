"""The authoritative lookup (RFC 1034 §4.3.2), independent of the wire format around it."""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, RR, DNSLabel

from mxlab.dns.faults import Faults
from mxlab.dns.zones import ZoneData, name_key

MAX_CNAME_CHAIN = 8  # loop guard for CNAME chains inside a zone
ADDRESS_TYPES = (QTYPE.A, QTYPE.AAAA)


@dataclass
class Outcome:
    """What to answer; ``drop`` means send nothing at all (the timeout fault)."""

    rcode: int = RCODE.NOERROR
    aa: bool = True
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    drop: bool = False


def _target(rr: RR) -> DNSLabel | None:
    """The name whose addresses RFC 1035 §3.3 additional section processing adds."""
    if rr.rtype in (QTYPE.MX, QTYPE.NS):
        return rr.rdata.label
    if rr.rtype == QTYPE.SRV:
        return rr.rdata.target
    return None


def _wildcard(zone: ZoneData, key: str) -> str | None:
    """RFC 4592 §3.3.1: the source of synthesis, ``*.`` + the closest encloser."""
    encloser = key
    while encloser not in zone.names:
        encloser = encloser.split(".", 1)[1]
    source = "*." + encloser
    return source if source in zone.rrsets else None


def _addresses(zone: ZoneData, rrs: list[RR], present: list[RR]) -> list[RR]:
    """Addresses of the MX, NS and SRV targets, from the same zone only: out-of-zone
    data would not be trusted (RFC 2181 §5.4.1), and NSD leaves it out too."""
    seen = {(name_key(rr.rname), rr.rtype) for rr in present}
    extra: list[RR] = []
    for rr in rrs:
        target = _target(rr)
        if target is None:
            continue
        key = name_key(target)
        for qtype in ADDRESS_TYPES:
            if (key, qtype) not in seen:
                seen.add((key, qtype))
                extra += zone.rrsets.get(key, {}).get(qtype, [])
    return extra


def _renamed(rrs: list[RR], owner: DNSLabel) -> list[RR]:
    """The RRset with the question's spelling of the owner, so it compresses onto it."""
    return [RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata) for rr in rrs]


class Lookup:
    def __init__(self, zones: list[ZoneData], faults: Faults | None = None) -> None:
        self.zones = {z.key: z for z in zones}
        self.faults = faults or Faults()

    def zone_for(self, key: str) -> ZoneData | None:
        """The closest enclosing zone we serve (RFC 1034 §4.3.2 step 2)."""
        while True:
            zone = self.zones.get(key)
            if zone is not None:
                return zone
            if key == ".":
                return None
            key = key.split(".", 1)[1] or "."

    def rrsets(self, key: str) -> dict[int, list[RR]]:
        zone = self.zone_for(key)
        node = zone.rrsets.get(key, {}) if zone else {}
        if QTYPE.MX in node and key in self.faults.drop_mx:
            node = {t: rrs for t, rrs in node.items() if t != QTYPE.MX}
        return node

    def find(self, qname: DNSLabel, qtype: int) -> Outcome:
        key = name_key(qname)
        if key in self.faults.timeout:
            return Outcome(drop=True)
        if key in self.faults.servfail:
            return Outcome(rcode=RCODE.SERVFAIL, aa=False)
        zone = self.zone_for(key)
        if zone is None:
            return Outcome(rcode=RCODE.REFUSED, aa=False)  # not ours: no recursion, no referral
        out = Outcome()
        owner = qname
        for _ in range(MAX_CNAME_CHAIN):
            cut = self._cut(zone, owner)
            if cut is not None:
                return self._finish(out, zone) if out.answer else self._referral(out, zone, cut)
            source = key if key in zone.names else _wildcard(zone, key)
            if source is None:
                out.rcode = RCODE.NXDOMAIN  # RFC 6604 §3: the rcode of the last name
                out.authority = [zone.negative_soa]
                return out
            node = self.rrsets(source)
            cname = node.get(QTYPE.CNAME)
            if cname and qtype not in (QTYPE.CNAME, QTYPE.ANY):
                out.answer += _renamed(cname, owner)  # RFC 1034 §3.6.2
                owner = cname[0].rdata.label
                key = name_key(owner)
                target_zone = self.zone_for(key)
                if target_zone is None:
                    return out  # not ours: the resolver follows it (NSD adds no NS)
                zone = target_zone  # RFC 1034 §4.3.2 step 3a: restart at step 1, as NSD
                continue
            if qtype == QTYPE.ANY:
                found = [rr for rrs in node.values() for rr in rrs]
            else:
                found = node.get(qtype, [])
            if not found:
                out.authority = [zone.negative_soa]  # NODATA, RFC 2308 §2.2
                return out
            out.answer += _renamed(found, owner)
            break
        return self._finish(out, zone)

    def _finish(self, out: Outcome, zone: ZoneData) -> Outcome:
        """Positive answer: the zone's NS in authority and addresses in additional, as
        NSD does (RFC 1034 §4.3.2 step 3a/6, RFC 2181 §5.4.1)."""
        apex_ns = self.rrsets(zone.key).get(QTYPE.NS, [])
        answered_ns = any(
            rr.rtype == QTYPE.NS and name_key(rr.rname) == zone.key for rr in out.answer
        )
        if not answered_ns:
            out.authority = list(apex_ns)
        out.additional = _addresses(zone, out.answer + out.authority, out.answer)
        return out

    def _cut(self, zone: ZoneData, owner: DNSLabel) -> str | None:
        """A delegation (NS below the apex) at or above ``owner`` (RFC 1034 §4.3.2 3b)."""
        labels = owner.label
        for start in range(len(labels) - len(zone.origin.label) - 1, -1, -1):
            key = name_key(DNSLabel(labels[start:]))
            if QTYPE.NS in zone.rrsets.get(key, {}):
                return key
        return None

    def _referral(self, out: Outcome, zone: ZoneData, cut: str) -> Outcome:
        out.aa = False
        out.authority = list(self.rrsets(cut)[QTYPE.NS])
        out.additional = _addresses(zone, out.authority, [])
        return out

    def transfer(self, qname: DNSLabel) -> list[RR] | None:
        """AXFR body (RFC 5936 §2.2): SOA, every record, SOA; None if not a zone apex."""
        zone = self.zones.get(name_key(qname))
        if zone is None:
            return None
        return [*zone.records, zone.soa]
