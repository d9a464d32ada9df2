"""Rendered zones are BIND master files that named-checkzone accepts, for the sample
zones and for every shipped topology's planned zones."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mxlab.cli import app
from mxlab.dns.zonefile import render_zone
from mxlab.dns.zones import load_zone
from mxlab.lab import labdir
from mxlab.lab.plan import LabPlan, make_plan
from mxlab.lab.topology import load_topology
from mxlab.nodes.config import DnsRecord, Zone
from tests.conftest import TOPOLOGIES
from tests.test_dns_support import forward_zone, lab_zones, need, rich_plan


def named_checkzone(origin: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """named-checkzone at its strictest on names, NS, MX and SRV targets."""
    path = tmp_path / "zone"
    path.write_text(text)
    strict = ["-k", "fail", "-n", "fail", "-m", "fail", "-M", "fail", "-S", "fail"]
    cmd = [need("named-checkzone"), *strict, origin, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True)


def check_zone(zone: Zone, tmp_path: Path) -> str:
    result = named_checkzone(zone.origin, render_zone(zone), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr + render_zone(zone)
    return result.stdout


def test_render_starts_with_origin_ttl_and_soa() -> None:
    text = render_zone(lab_zones()[0])
    lines = text.splitlines()
    assert lines[0] == "$ORIGIN alpha.test."
    assert lines[1].startswith("$TTL ")
    assert lines[2].split()[:4] == ["@", "600", "IN", "SOA"]
    assert "_submission._tcp" in text and '"v=spf1 mx -all"' in text


@pytest.mark.parametrize("zone", lab_zones(), ids=lambda z: z.origin)
def test_named_checkzone_accepts_sample_zones(zone: Zone, tmp_path: Path) -> None:
    assert "loaded serial" in check_zone(zone, tmp_path)


TOPOLOGY_FILES = sorted(p for p in TOPOLOGIES.glob("*.yaml") if ".scenario." not in p.name)


@pytest.mark.parametrize("path", TOPOLOGY_FILES, ids=lambda p: p.stem)
def test_named_checkzone_accepts_planned_zones(path: Path, tmp_path: Path) -> None:
    plan = make_plan(load_topology(path), runtime="local", lab_dir=tmp_path / "lab")
    for zone in plan.zones:
        check_zone(zone, tmp_path)


def printed_zones(plan: LabPlan) -> dict[str, str]:
    """What ``mxlab dns zone LAB`` prints, split into zones by their $ORIGIN."""
    labdir.write_plan(plan)
    result = CliRunner().invoke(app, ["dns", "zone", plan.lab])
    assert result.exit_code == 0, result.output
    chunks = result.output.split("$ORIGIN ")[1:]
    return {chunk.split("\n", 1)[0]: "$ORIGIN " + chunk for chunk in chunks}


@pytest.mark.parametrize("path", [*TOPOLOGY_FILES, None], ids=lambda p: p.stem if p else "rich")
def test_named_checkzone_accepts_what_mxlab_dns_zone_prints(
    path: Path | None, tmp_path: Path, mxlab_home: Path
) -> None:
    if path is None:
        plan = rich_plan(labdir.lab_dir("dnsrich"))
    else:
        topology = load_topology(path)
        plan = make_plan(topology, runtime="local", lab_dir=labdir.lab_dir(topology.name))
    zones = printed_zones(plan)
    assert sorted(zones) == sorted(z.origin for z in plan.zones)
    for origin, text in zones.items():
        result = named_checkzone(origin, text, tmp_path)
        assert result.returncode == 0 and "loaded serial" in result.stdout, result.stdout + text


BAD_RECORDS = {
    "A that is no address": ("www.alpha.test.", "A", "not-an-ip"),
    "SRV without a port": ("_x._tcp.alpha.test.", "SRV", "1 2 mx1.alpha.test."),
    "CNAME beside an A": ("mx1.alpha.test.", "CNAME", "www.alpha.test."),
    "CNAME at the apex": ("alpha.test.", "CNAME", "www.alpha.test."),
    "MX at a CNAME": ("alpha.test.", "MX", "30 www.alpha.test."),
    "NS at a CNAME": ("sub2.alpha.test.", "NS", "www.alpha.test."),
    "SRV at a CNAME": ("_imap._tcp.alpha.test.", "SRV", "0 1 143 www.alpha.test."),
}


@pytest.mark.parametrize("record", BAD_RECORDS.values(), ids=list(BAD_RECORDS))
def test_zones_named_checkzone_refuses_do_not_load(
    record: tuple[str, str, str], tmp_path: Path
) -> None:
    """The node refuses what named-checkzone refuses, naming the record, rather than
    serve a zone that resolvers would choke on."""
    zone = forward_zone()
    name, rdtype, rdata = record
    zone.records.append(DnsRecord(name=name, type=rdtype, rdata=rdata))
    checked = named_checkzone(zone.origin, render_zone(zone), tmp_path)
    assert checked.returncode != 0 or "(illegal)" in checked.stdout  # NS: said, not fatal
    with pytest.raises(ValueError, match=re.escape(name)):
        load_zone(zone)
