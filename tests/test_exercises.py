"""Exercises: each shipped broken lab fails its checker while broken and passes once the
intended fix is applied through the API, on the running lab; and the record changes
those fixes use."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import mxlab
from mxlab import exercises
from mxlab.api import preview
from mxlab.lab import records

from .conftest import TOPOLOGIES


def _addr(lab: mxlab.Lab, node: str) -> str:
    return lab.plan.nodes[node].address


def _fix_wrong_mx(lab: mxlab.Lab) -> None:
    lab.dns_remove("beta.test", "MX", "5 store-beta.beta.test.")


def _fix_mx_no_address(lab: mxlab.Lab) -> None:
    lab.dns_add("mail.beta.test", "A", _addr(lab, "mx-beta"))


def _fix_mx_lost_address(lab: mxlab.Lab) -> None:
    lab.dns_add("mx-beta.beta.test", "A", _addr(lab, "mx-beta"))


def _fix_mx_wrong_address(lab: mxlab.Lab) -> None:
    lab.dns_change(
        remove=[("mx-beta.beta.test", "A", None)],
        add=[("mx-beta.beta.test", "A", _addr(lab, "mx-beta"))],
    )


def _fix_mx_down(lab: mxlab.Lab) -> None:
    lab.start("mx-beta")
    lab.queue_action("flush", node="mx-alpha")


def _fix_dns_servfail(lab: mxlab.Lab) -> None:
    assert lab.dns_restore() == []


def _fix_missing_ptr(lab: mxlab.Lab) -> None:
    reverse = ipaddress.ip_address(_addr(lab, "mx-alpha")).reverse_pointer
    lab.dns_add(reverse, "PTR", "mx-alpha.alpha.test.")


def _fix_expired_cert(lab: mxlab.Lab) -> None:
    lab.cert_renew("store-beta")


def _edit_config(lab: mxlab.Lab, node: str, field: str, value: object) -> None:
    """What those tasks ask: the node's config file edited, the node restarted."""
    path = lab.directory / "nodes" / node / "config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    lab.restart(node)


def _fix_open_relay(lab: mxlab.Lab) -> None:
    _edit_config(lab, "mx-beta", "trusted_clients", [])


def _fix_relay_loop(lab: mxlab.Lab) -> None:
    _edit_config(lab, "edge", "next_hop", None)


def _fix_wrong_store(lab: mxlab.Lab) -> None:
    path = lab.directory / "nodes" / "mx-beta" / "config.json"
    domains = json.loads(path.read_text())["local_domains"]
    domains["beta.test"]["lmtp"]["host"] = _addr(lab, "store-beta")
    _edit_config(lab, "mx-beta", "local_domains", domains)


FIXES: dict[str, Callable[[mxlab.Lab], None]] = {
    "wrong-mx": _fix_wrong_mx,
    "mx-no-address": _fix_mx_no_address,
    "mx-lost-address": _fix_mx_lost_address,
    "mx-wrong-address": _fix_mx_wrong_address,
    "mx-down": _fix_mx_down,
    "dns-servfail": _fix_dns_servfail,
    "missing-ptr": _fix_missing_ptr,
    "expired-cert": _fix_expired_cert,
    "open-relay": _fix_open_relay,
    "relay-loop": _fix_relay_loop,
    "wrong-store": _fix_wrong_store,
}


def test_every_shipped_exercise_has_a_fix_here() -> None:
    assert sorted(FIXES) == exercises.shipped()
    assert len(FIXES) >= 6


@pytest.mark.parametrize("name", sorted(FIXES))
def test_exercise_topology_validates(name: str) -> None:
    ex = exercises.load(name)
    assert ex.task.strip() and ex.goals
    assert ex.lab.startswith("ex-")  # its own lab name: the checker finds it by that


@pytest.mark.parametrize("name", sorted(FIXES))
def test_checker_fails_broken_and_passes_fixed(name: str, mxlab_home: Path) -> None:
    ex = exercises.load(name)
    lab = exercises.start(ex, "local")
    try:
        assert exercises.of_lab(mxlab.Lab.attach(lab.name)).name == name
        broken = exercises.check(lab, ex)
        assert not broken[0].ok, broken[0]  # the first goal names the breakage
        FIXES[name](lab)
        fixed = exercises.check(lab, ex)
        assert all(v.ok for v in fixed), [v for v in fixed if not v.ok]
    finally:
        lab.down()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from mxlab.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )


def test_cli_check_exit_codes_and_hint(mxlab_home: Path) -> None:
    """The student's loop on the command line: check fails with a hint, the fix is a
    `mxlab dns remove`, check passes."""
    start = _cli("exercise", "start", "wrong-mx", "--runtime", "local")
    assert start.returncode == 0, start.stderr
    assert "Your task" in start.stdout
    try:
        broken = _cli("exercise", "check", "--hint")
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "FAIL every MX of beta.test" in broken.stdout
        assert "hint: " in broken.stdout and "store-beta" in broken.stdout
        dig = _cli("dig", "beta.test", "MX")
        assert "5 store-beta.beta.test." in dig.stdout
        fix = _cli("dns", "remove", "beta.test", "MX", "5 store-beta.beta.test")
        assert fix.returncode == 0, fix.stderr
        fixed = _cli("exercise", "check")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "solved" in fixed.stdout
    finally:
        _cli("down")


# -- the record changes, without a lab ----------------------------------------------
@pytest.fixture
def plan(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a LabPlan
    monkeypatch.setenv("MXLAB_HOME", "/nonexistent/mxlab-home")
    return preview(TOPOLOGIES / "two-domains.yaml")


def _rdata(plan, name: str, rdtype: str) -> list[str]:  # noqa: ANN001
    return sorted(
        r.rdata for z in plan.zones for r in z.records if (r.name, r.type) == (name, rdtype)
    )


def test_records_edit_replaces_in_plan_and_dns_config(plan) -> None:  # noqa: ANN001
    new = records.edited(
        plan,
        add=[("beta.test", "MX", "20 MX-Alpha.alpha.test")],  # normalised: lowercase, dot
        remove=[("beta.test.", "MX", "10 mx-beta.beta.test.")],
    )
    assert _rdata(new, "beta.test.", "MX") == ["20 mx-alpha.alpha.test."]
    assert new.dns_node.config.zones == new.zones
    assert _rdata(plan, "beta.test.", "MX") == ["10 mx-beta.beta.test."]  # not mutated


@pytest.mark.parametrize(
    ("add", "remove", "error"),
    [
        ([], [("beta.test", "MX", "10 nothere.beta.test")], "no record beta.test. MX"),
        ([], [("beta.test", "SOA", None)], "SOA record cannot be removed"),
        ([("beta.example", "A", "127.0.0.1")], [], "in none of the lab's zones"),
        ([("mx-beta.beta.test", "CNAME", "x.beta.test.")], [], "would refuse"),
        ([("x.beta.test", "A", "not-an-address")], [], "not valid record data"),
        ([("x.beta.test", "SOA", "a. b. 1 2 3 4 5")], [], "cannot add a SOA"),
        ([("beta.test", "MX", "10 mx-beta.beta.test.")], [], "already in the zone"),
    ],
)
def test_records_edit_refuses(plan, add, remove, error: str) -> None:  # noqa: ANN001
    with pytest.raises(mxlab.LabError, match=error):
        records.edited(plan, add, remove)


def test_placeholders(plan) -> None:  # noqa: ANN001
    class FakeLab:
        name = "two-domains"

    fake = FakeLab()
    fake.plan = plan  # type: ignore[attr-defined]
    addr = plan.nodes["mx-alpha"].address
    text = exercises.expand(fake, "{reverse:mx-alpha} {address:mx-alpha} {fqdn:mx-alpha}")  # type: ignore[arg-type]
    rev = ipaddress.ip_address(addr).reverse_pointer
    assert text == f"{rev}. {addr} mx-alpha.alpha.test."
    with pytest.raises(mxlab.LabError, match="no node 'nope'"):
        exercises.expand(fake, "{address:nope}")  # type: ignore[arg-type]
