"""Topology mistakes are one line naming file, field and fix; exit 2; no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mxlab.lab.topology import TopologyError, load_topology, max_password_bytes, parse_topology

from .conftest import TOPOLOGIES

GOOD = (TOPOLOGIES / "two-domains.yaml").read_text()


def test_shipped_topologies_validate() -> None:
    for path in TOPOLOGIES.glob("*.yaml"):
        if path.name.endswith(".scenario.yaml"):
            continue
        topo = load_topology(path)
        assert topo.domains and topo.nodes


def _mxlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mxlab.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


BROKEN = {
    "unknown node": (
        GOOD.replace("- node: mx-beta", "- node: mx9"),
        "domains.beta.test.mx[0].node",
        "no node named 'mx9'",
        "use one of: mx-alpha, mx-beta",
    ),
    "duplicate user": (
        GOOD.replace("carol: carol-secret", "carol: carol-secret\n      alice: again"),
        "domains.alpha.test.users.alice",
        "duplicate key",
        "keep one of them",
    ),
    "duplicate user by case": (
        GOOD.replace("carol: carol-secret", "carol: carol-secret\n      Alice: again"),
        "domains.alpha.test.users.Alice",
        "duplicate user",
        "case-blind",
    ),
    "domain with no store": (
        GOOD.replace("    store: store-beta\n", ""),
        "domains.beta.test.store",
        "required field is missing",
        "add it",
    ),
    "store that is a relay": (
        GOOD.replace("store: store-beta", "store: mx-beta"),
        "domains.beta.test.store",
        "'mx-beta' is a relay, need a store",
        "use one of: store-alpha, store-beta",
    ),
    "bad port": (
        GOOD.replace("records:", "settings:\n  ports:\n    smtp: 70000\nrecords:"),
        "settings.ports.smtp",
        "less than or equal to 65535",
        "use a value in range",
    ),
    "unknown port name": (
        GOOD.replace("records:", "settings:\n  ports:\n    smpt: 25\nrecords:"),
        "settings.ports.smpt",
        "",
        "",
    ),
    "YAML syntax": (GOOD.replace("  mx-beta:\n", "  mx-beta: [\n"), ":", "YAML syntax", "fix"),
    "unknown field": (
        GOOD.replace("kind: dns", "kind: dns\n    colour: red"),
        "nodes.ns.colour",
        "unknown field",
        "spelling",
    ),
    "not a .test domain": (
        GOOD.replace("beta.test:", "beta.example:"),
        "domains.beta.example",
        ".test",
        "RFC 6761",
    ),
    "record that does not parse": (
        GOOD.replace("type: TXT\n    value: '\"v=spf1 mx -all\"'", "type: MX\n    value: ten mx"),
        "records[0].value",
        "cannot parse",
        "zone file",
    ),
    "CNAME beside other data": (
        GOOD.replace("records:", "records:\n  - {name: alpha.test, type: CNAME, value: x.test.}"),
        "records",
        "CNAME and other records",
        "change or remove",
    ),
    "hostname outside the lab": (
        GOOD.replace(
            "kind: relay\n  store-alpha",
            "kind: relay\n    hostname: mail.example.org\n  store-alpha",
        ),
        "nodes.mx-alpha.hostname",
        "outside the lab's domains",
        "under alpha.test",
    ),
    "fault step among the checks": (
        GOOD.replace("checks:\n", "checks:\n  - stop: mx-beta\n"),
        "checks[0]",
        "stop is a fault step",
        "scenario file",
    ),
    "check naming an unknown node": (
        GOOD.replace("expect_no_open_relay: {node: mx-alpha}", "expect_no_open_relay: {node: mx9}"),
        "checks[1].node",
        "no node named 'mx9'",
        "use one of",
    ),
    "send_as for a user that does not exist": (
        GOOD.replace(
            "      carol: carol-secret\n",
            "      carol: carol-secret\n    send_as:\n      eve: [x@alpha.test]\n",
        ),
        "domains.alpha.test.send_as.eve",
        "no user 'eve'",
        "add it under users",
    ),
    "send_as that is not an address": (
        GOOD.replace(
            "      carol: carol-secret\n",
            "      carol: carol-secret\n    send_as:\n      carol: [postmaster]\n",
        ),
        "domains.alpha.test.send_as.carol[0]",
        "not a mail address",
        "local@domain",
    ),
    "next hop loop": (
        GOOD.replace(
            "kind: relay\n  store-alpha", "kind: relay\n    next_hop: mx-beta\n  store-alpha"
        ).replace("kind: relay\n  store-beta", "kind: relay\n    next_hop: mx-alpha\n  store-beta"),
        "next_hop",
        "loop",
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_topology_mistakes_are_one_located_line(case: str, tmp_path: Path) -> None:
    text, field, message, fix = BROKEN[case]
    assert text != GOOD, "the mutation must change the file"
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        parse_topology(text, str(path))
    line = str(info.value)
    assert line.startswith(str(path)), line
    assert field in line and message in line and fix in line, line

    proc = _mxlab("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and str(path) in lines[0]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = _mxlab("validate", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr and "cannot read" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_validate_good_file_summarises(tmp_path: Path) -> None:
    proc = _mxlab("validate", str(TOPOLOGIES / "two-domains.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 domains, 4 users" in proc.stdout


def _with_user(line: str, base: str = GOOD) -> str:
    return base.replace("      carol: carol-secret\n", f"      carol: carol-secret\n      {line}\n")


def test_password_up_to_the_login_line_limit_validates() -> None:
    """The longest password that still fits AUTH PLAIN and POP3 PASS lines is accepted;
    one byte more is refused."""
    limit = max_password_bytes("erin@alpha.test")
    parse_topology(_with_user(f"erin: {'p' * limit}"))
    with pytest.raises(TopologyError, match="login line would not fit"):
        parse_topology(_with_user(f"erin: {'p' * (limit + 1)}"))


def test_anchors_and_merge_keys_still_work() -> None:
    """Bounding alias expansion and refusing duplicate keys leave ordinary anchors alone."""
    text = GOOD.replace("  mx-alpha:\n    kind: relay\n", "  mx-alpha: &relay\n    kind: relay\n")
    text = text.replace("  mx-beta:\n    kind: relay\n", "  mx-beta:\n    <<: *relay\n")
    text = text.replace("alice: alice-secret", "alice: &pw alice-secret").replace(
        "carol: carol-secret", "carol: *pw"
    )
    topo = parse_topology(text)
    assert topo.nodes["mx-beta"].kind == "relay"
    assert topo.domains["alpha.test"].users["carol"] == "alice-secret"


def test_a_pinned_larger_subnet_takes_more_nodes() -> None:
    """Over 253 nodes need more than a /24: pinning /23s for both runtimes is the fix the
    error names, and it validates (addresses and zones included)."""
    relays = "".join(f"  r{i}:\n    kind: relay\n" for i in range(300))
    text = GOOD.replace(
        "  store-beta:\n    kind: store\n", f"  store-beta:\n    kind: store\n{relays}"
    )
    with pytest.raises(TopologyError, match="addresses for 253"):
        parse_topology(text)
    pinned = text + "settings:\n  local_subnet: 127.77.0.0/23\n  docker_subnet: 10.231.0.0/23\n"
    assert len(parse_topology(pinned).nodes) == 305


def test_plan_refuses_more_nodes_than_its_subnet_holds(tmp_path: Path) -> None:
    """A topology changed in code after validation (the pytest pool drops pinned subnets)
    gets a LabError from the plan, not a StopIteration."""
    from mxlab.lab.errors import LabError
    from mxlab.lab.plan import make_plan

    relays = "".join(f"  r{i}:\n    kind: relay\n" for i in range(300))
    text = GOOD.replace(
        "  store-beta:\n    kind: store\n", f"  store-beta:\n    kind: store\n{relays}"
    )
    pins = "settings:\n  local_subnet: 127.77.0.0/23\n  docker_subnet: 10.231.0.0/23\n"
    topo = parse_topology(text + pins)
    unpinned = topo.model_copy(
        update={"settings": topo.settings.model_copy(update={"local_subnet": None})}
    )
    with pytest.raises(LabError, match="305 nodes do not fit"):
        make_plan(unpinned, runtime="local", lab_dir=tmp_path)
