"""A lab zone in BIND master-file format (RFC 1035 §5), for people and for named-checkzone."""

from __future__ import annotations

from mxlab.nodes.config import DnsRecord, Zone


def _owner(name: str, origin: str) -> str:
    """Owner relative to $ORIGIN where it is inside the zone ("@" for the apex)."""
    if name.lower() == origin.lower():
        return "@"
    suffix = "." + origin
    if name.lower().endswith(suffix.lower()):
        return name[: -len(suffix)]
    return name


def render_zone(zone: Zone) -> str:
    """$ORIGIN, $TTL, the SOA first (RFC 1035 §5.2), then the records in config order."""
    origin = zone.origin if zone.origin.endswith(".") else zone.origin + "."
    soa = [r for r in zone.records if r.type.upper() == "SOA"]
    rest = [r for r in zone.records if r.type.upper() != "SOA"]
    default_ttl = soa[0].ttl if soa else 300
    records: list[DnsRecord] = soa + rest
    width = max((len(_owner(r.name, origin)) for r in records), default=1)
    lines = [f"$ORIGIN {origin}", f"$TTL {default_ttl}"]
    for rec in records:
        owner = _owner(rec.name, origin)
        lines.append(f"{owner:<{width}} {rec.ttl:>6} IN {rec.type.upper():<5} {rec.rdata}")
    return "\n".join(lines) + "\n"
