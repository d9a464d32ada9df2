"""The lab's zones parsed once into RRsets by owner name, the shape lookups need."""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import QTYPE, RR, DNSError, DNSLabel

from mxlab.nodes.config import Zone


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


def load_zone(zone: Zone) -> ZoneData:
    """Parse each record's presentation-form RDATA with dnslib; ValueError says which."""
    origin = DNSLabel(zone.origin)
    data = ZoneData(origin=origin, records=[])
    for rec in zone.records:
        line = f"{rec.name} {rec.ttl} IN {rec.type} {rec.rdata}"
        try:
            rrs = RR.fromZone(line, origin=zone.origin)
        except (DNSError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise ValueError(f"zone {zone.origin}: cannot parse {line!r}: {exc}") from exc
        for rr in rrs:
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
    return data


def _add_with_ancestors(data: ZoneData, name: DNSLabel) -> None:
    """RFC 4592 §2.2.2: an ancestor with no records of its own still exists (NODATA)."""
    labels = name.label
    depth = len(data.origin.label)
    for start in range(len(labels) - depth + 1):
        data.names.add(name_key(DNSLabel(labels[start:])))
