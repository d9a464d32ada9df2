"""Rendered zones are BIND master files that named-checkzone accepts, for the sample
zones and for every shipped topology's planned zones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mxlab.dns.zonefile import render_zone
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import load_topology
from mxlab.nodes.config import Zone
from tests.conftest import TOPOLOGIES
from tests.test_dns_support import lab_zones, need


def check_zone(zone: Zone, tmp_path: Path) -> str:
    path = tmp_path / "zone"
    path.write_text(render_zone(zone))
    cmd = [need("named-checkzone"), "-k", "fail", "-n", "fail", zone.origin, str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr + path.read_text()
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
