"""Starting many nodes: readiness probes back off and ask the runtime whether a node died
only now and then, yet a node that died still fails the start at once, by name."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mxlab.lab.errors import LabError
from mxlab.lab.plan import make_plan
from mxlab.lab.ready import ALIVE_EVERY, wait_ready
from mxlab.lab.topology import parse_topology

ROOT = Path(__file__).resolve().parent.parent


def test_a_dead_node_fails_the_wait_at_once(tmp_path: Path) -> None:
    text = (ROOT / "examples/topologies/two-domains.yaml").read_text()
    plan = make_plan(parse_topology(text, "t.yaml"), runtime="local", lab_dir=tmp_path,
                     subnet="127.78.0.0/24")  # fmt: skip
    nodes = list(plan.nodes.values())  # nothing listens there: never ready
    asked: list[str] = []

    def alive(node) -> str | None:  # noqa: ANN001 - a NodePlan
        asked.append(node.name)
        return "boom" if node.name == "mx-beta" and asked.count(node.name) > 1 else None

    started = time.monotonic()
    with pytest.raises(LabError, match="node mx-beta exited while starting: boom"):
        wait_ready(nodes, started + 30, alive)
    took = time.monotonic() - started
    assert took < 5
    assert asked.count("ns") <= 2 + took / ALIVE_EVERY  # not at every probe


def test_local_up_without_prepared_spawners_starts_every_node(mxlab_home: Path) -> None:
    """``up`` on a runtime whose spawners were not started ahead (no ``prepare``) starts
    its own, one per role, and every node answers."""
    from mxlab.lab import labdir
    from mxlab.lab.ready import is_ready
    from mxlab.lab.runtime.local import LocalRuntime

    topo = parse_topology((ROOT / "examples/topologies/two-domains.yaml").read_text(), "t.yaml")
    plan = make_plan(topo, runtime="local", lab_dir=labdir.lab_dir(topo.name))
    labdir.write_plan(plan)
    runtime = LocalRuntime()
    try:
        runtime.up(plan, lambda line: None)
        assert all(is_ready(node) for node in plan.nodes.values())
        assert {s.state for s in runtime.status(plan.lab)} == {"running"}
    finally:
        runtime.down(plan.lab)
