"""The lab's zones parsed once into RRsets by owner name, the shape lookups need."""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import QTYPE, RR, DNSError, DNSLabel

from mxlab.nodes.config import DnsRecord, Zone


def name_key(name: DNSLabel | str) -> str:
    """Names compare case-insensitively (RFC 1035 §2.3.3, RFC 4343)."""
    return str(name if isinstance(name, DNSLabel) else DNSLabel(name)).lower()


@dataclass
class ZoneData:
    origin: DNSLabel
    records: list[RR]  # SOA first, in config order: the AXFR body (RFC 5936 §2.2)
    rrsets: dict[str, dict[int, list[RR]]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # owners plus empty non-terminals

    @property
    def key(self) -> str:
        return name_key(self.origin)

    @property
    def soa(self) -> RR:
        return self.rrsets[self.key][QTYPE.SOA][0]

    @property
    def negative_soa(self) -> RR:
        """RFC 2308 §3: the SOA of a negative answer has TTL min(SOA TTL, SOA minimum)."""
        soa = self.soa
        return RR(soa.rname, QTYPE.SOA, ttl=min(soa.ttl, soa.rdata.times[4]), rdata=soa.rdata)

    def contains(self, key: str) -> bool:
        return key == self.key or key.endswith("." + self.key) or self.key == "."


def parse_record(rec: DnsRecord, origin: str) -> list[RR]:
    """One record's presentation form (RFC 1035 §5.1) parsed by dnslib; ValueError with
    the line when it does not parse (a typo in a topology's extra records)."""
    line = f"{rec.name} {rec.ttl} IN {rec.type} {rec.rdata}"
    try:
        rrs = RR.fromZone(line, origin=origin)
    except (DNSError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"zone {origin}: cannot parse {line!r}: {exc}") from exc
    if len(rrs) != 1 or rrs[0].rtype != getattr(QTYPE, rec.type.upper(), None):
        raise ValueError(f"zone {origin}: cannot parse {line!r}")
    return rrs


def load_zone(zone: Zone) -> ZoneData:
    """Parse the records and check the zone the way named-checkzone would; ValueError
    names the first record at fault."""
    origin = DNSLabel(zone.origin)
    data = ZoneData(origin=origin, records=[])
    for rec in zone.records:
        for rr in parse_record(rec, zone.origin):
            key = name_key(rr.rname)
            if not data.contains(key):
                raise ValueError(f"zone {zone.origin}: {rr.rname} is outside the zone")
            data.rrsets.setdefault(key, {}).setdefault(rr.rtype, []).append(rr)
            data.records.append(rr)
            _add_with_ancestors(data, rr.rname)
    soas = data.rrsets.get(data.key, {}).get(QTYPE.SOA, [])
    if len(soas) != 1:
        raise ValueError(f"zone {zone.origin}: needs exactly one SOA at the apex")
    data.records.sort(key=lambda rr: rr.rtype != QTYPE.SOA)  # stable: SOA first
    problem = _conflict(data)
    if problem:
        raise ValueError(f"zone {zone.origin}: {problem}")
    return data


TARGETS = {QTYPE.MX: "label", QTYPE.NS: "label", QTYPE.SRV: "target"}


def _conflict(data: ZoneData) -> str | None:
    """What named-checkzone refuses and resolvers would stumble on."""
    for key, node in data.rrsets.items():
        # RFC 1034 §3.6.2, RFC 2181 §10.1: a CNAME owner has no other data
        if QTYPE.CNAME in node and (len(node) > 1 or len(node[QTYPE.CNAME]) > 1):
            return f"{key} has a CNAME and other records (RFC 2181 §10.1): keep one"
    for key, node in data.rrsets.items():
        for rtype, attr in TARGETS.items():
            for rr in node.get(rtype, []):
                target = name_key(getattr(rr.rdata, attr))
                if QTYPE.CNAME in data.rrsets.get(target, {}):
                    kind = QTYPE.get(rtype)
                    return (
                        f"{key} {kind} points at {target}, a CNAME (RFC 2181 §10.3): "
                        "point it at the host's own name"
                    )
    return None


def _add_with_ancestors(data: ZoneData, name: DNSLabel) -> None:
    """RFC 4592 §2.2.2: an ancestor with no records of its own still exists (NODATA)."""
    labels = name.label
    depth = len(data.origin.label)
    for start in range(len(labels) - depth + 1):
        data.names.add(name_key(DNSLabel(labels[start:])))
