"""Change the running lab's DNS records: the zones in the plan, the DNS node's config and
the BIND files are rewritten together, then the DNS node reloads them (SIGHUP; a DNS
kind that cannot, such as NSD here, is restarted).

This is how a student fixes (and an exercise breaks) a lab's DNS while it runs; the
topology file is left alone."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from mxlab.dns.zonefile import render_zone
from mxlab.dns.zones import load_zone
from mxlab.lab import kinds, labdir, live
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan, zone_of
from mxlab.lab.runtime.base import Runtime
from mxlab.nodes.config import DnsNodeConfig, DnsRecord, Zone
from mxlab.nodes.reload import digest

TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "PTR", "SRV", "CAA")


def _absolute(name: str) -> str:
    return name.strip().rstrip(".").lower() + "."


def normal_rdata(rdtype: str, value: str) -> str:
    """RDATA as the zone writes it: names absolute and lowercased ("10 mx.beta.test.")."""
    try:
        rd = dns.rdata.from_text(
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rdtype),
            value,
            origin=dns.name.root,
            relativize=False,
        )
    except (dns.exception.DNSException, ValueError) as exc:
        raise LabError(f"{rdtype} {value!r}: not valid record data ({exc})") from None
    text = rd.to_text()
    return text if rdtype == "TXT" else text.lower()


def _zone_index(plan: LabPlan, name: str) -> int:
    origins = [z.origin.rstrip(".") for z in plan.zones]
    origin = zone_of(name, origins)
    if origin is None:
        raise LabError(f"{name} is in none of the lab's zones ({', '.join(origins)})")
    return origins.index(origin)


def _matches(rec: DnsRecord, name: str, rdtype: str, value: str | None) -> bool:
    if _absolute(rec.name) != name or rec.type != rdtype:
        return False
    return value is None or normal_rdata(rdtype, rec.rdata) == value


def edited(
    plan: LabPlan,
    add: Sequence[tuple[str, str, str]] = (),
    remove: Sequence[tuple[str, str, str | None]] = (),
    ttl: int = 300,
) -> LabPlan:
    """The plan with ``remove`` (name, type, value or None for all of that type) taken
    out and ``add`` (name, type, value) put in; each zone checked as the DNS node
    loads it. A removal that matches nothing is an error (a typo must not pass)."""
    zones = [list(z.records) for z in plan.zones]
    for name, rdtype, value in remove:
        rdtype = rdtype.upper()
        if rdtype == "SOA":
            raise LabError("the SOA record cannot be removed")
        i, owner = _zone_index(plan, name), _absolute(name)
        want = None if value is None else normal_rdata(rdtype, value)
        kept = [r for r in zones[i] if not _matches(r, owner, rdtype, want)]
        if len(kept) == len(zones[i]):
            what = f"{owner} {rdtype}" + (f" {want}" if want else "")
            raise LabError(f"no record {what} in the lab's zones (see: mxlab dns zone)")
        zones[i] = kept
    for name, rdtype, value in add:
        rdtype = rdtype.upper()
        if rdtype not in TYPES:
            raise LabError(f"cannot add a {rdtype} record (one of {', '.join(TYPES)})")
        i = _zone_index(plan, name)
        rec = DnsRecord(
            name=_absolute(name), type=rdtype, ttl=ttl, rdata=normal_rdata(rdtype, value)
        )
        if any(_matches(r, rec.name, rdtype, rec.rdata) for r in zones[i]):
            raise LabError(f"{rec.name} {rdtype} {rec.rdata} is already in the zone")
        zones[i].append(rec)
    new_zones = [Zone(origin=z.origin, records=r) for z, r in zip(plan.zones, zones, strict=True)]
    for zone in new_zones:
        try:
            load_zone(zone)
        except ValueError as exc:
            raise LabError(f"the DNS node would refuse that change: {exc}") from None
    dns_node = plan.dns_node
    assert isinstance(dns_node.config, DnsNodeConfig)
    config = dns_node.config.model_copy(update={"zones": new_zones})
    nodes = plan.nodes | {dns_node.name: dns_node.model_copy(update={"config": config})}
    return plan.model_copy(update={"zones": new_zones, "nodes": nodes})


def apply(plan: LabPlan, runtime: Runtime, new: LabPlan) -> None:
    """Write the new zones where the DNS node and `mxlab dns zone` read them, and have
    the DNS node serve them: ours reloads on SIGHUP, other kinds restart (the fault
    file survives either way)."""
    root = labdir.node_dir(new, new.dns_node.name)
    with labdir.private():
        config_bytes = new.dns_node.config.model_dump_json(indent=2).encode()
        (root / "config.json").write_bytes(config_bytes)
        (Path(new.lab_dir) / "plan.json").write_text(new.model_dump_json(indent=2))
        for zone in new.zones:
            path = Path(new.lab_dir) / "zones" / f"{zone.origin.rstrip('.')}.zone"
            path.write_text(render_zone(zone))
    kinds.get(new.dns_node.kind).write_config(new, new.dns_node)  # e.g. NSD's zone files
    if new.dns_node.kind in live.RELOADS:
        runtime.signal(new, new.dns_node.name, signal.SIGHUP)
        live.wait_reloaded(new, new.dns_node.name, digest(config_bytes))
    else:
        runtime.restart(new, new.dns_node.name)
