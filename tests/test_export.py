"""`mxlab export compose`: docker-compose runs the exported lab without mxlab, and
mxlab's own check passes against it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mxlab.lab import labdir
from mxlab.lab.plan import make_plan
from mxlab.lab.ready import wait_ready
from mxlab.lab.topology import load_topology

from .conftest import DOCKER, TOPOLOGIES, needs_docker
from .test_lab_local import mxlab

TWO = TOPOLOGIES / "two-domains.yaml"
NAME = "export-two"  # not a name other tests' labs (and their labels) use
COMPOSE = shutil.which("docker-compose")


def _topology(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(TWO.read_text().replace("name: two-domains", f"name: {NAME}"))
    return path


@pytest.mark.usefixtures("mxlab_home")
def test_local_lab_is_refused_in_one_line(tmp_path: Path) -> None:
    """A local lab's configs name host paths: the export says to use the file."""
    topo = load_topology(_topology(tmp_path))
    labdir.write_plan(make_plan(topo, runtime="local", lab_dir=labdir.lab_dir(NAME)))
    proc = mxlab("export", "compose", NAME, "-o", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "export compose FILE" in proc.stderr


@pytest.mark.usefixtures("mxlab_home")
def test_stack_file_places_and_carries_configs(tmp_path: Path) -> None:
    """The stack file (not deployed here): configs as swarm configs, placement as a
    constraint, the planned address added by the node before it starts."""
    text = (
        _topology(tmp_path)
        .read_text()
        .replace("  ns:\n    kind: dns\n", "  ns:\n    kind: dns\n    placement: zone=a\n")
    )
    (tmp_path / "two.yaml").write_text(text)
    mxlab("export", "compose", str(tmp_path / "two.yaml"), "--swarm", "-o", str(tmp_path / "s"))
    doc = yaml.safe_load((tmp_path / "s" / "stack.yml").read_text())
    ns = doc["services"]["ns"]
    assert ns["deploy"]["placement"]["constraints"] == ["node.labels.zone==a"]
    targets = {c["target"] for c in ns["configs"]}
    assert "/mxlab/config.json" in targets
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    assert f"ip addr add {plan['nodes']['ns']['address']}/24" in ns["command"][-1]
    for config in doc["configs"].values():
        assert (tmp_path / "s" / config["file"]).is_file()


@pytest.mark.skipif(COMPOSE is None, reason="no docker-compose")
@pytest.mark.usefixtures("mxlab_home")
class TestCompose:
    pytestmark = needs_docker

    def test_file_export_runs_under_compose(self, tmp_path: Path) -> None:
        """A topology exported into the lab home: `mxlab check NAME` reads its plan."""
        mxlab("image", "build", timeout=1200)  # compose cannot build it
        folder = labdir.lab_dir(NAME)
        mxlab("export", "compose", str(_topology(tmp_path)), "-o", str(folder))
        _compose_up_and_check(folder, NAME)

    def test_running_lab_export_outlives_it(self, tmp_path: Path) -> None:
        """A running docker lab exported, then brought down: compose runs its copy."""
        mxlab("up", str(_topology(tmp_path)), "--runtime", "docker", timeout=1200)
        copy = labdir.lab_dir(f"{NAME}-copy")
        try:
            mxlab("export", "compose", NAME, "-o", str(copy))
        finally:
            mxlab("down", NAME)
        assert not (copy / "nodes" / "mx-alpha" / "node.log").exists()
        _compose_up_and_check(copy, copy.name)


def _compose_up_and_check(folder: Path, name: str) -> None:
    assert COMPOSE is not None and DOCKER is not None
    project = ["-p", f"mxlab-{NAME}", "-f", str(folder / "docker-compose.yml")]
    subprocess.run([COMPOSE, *project, "up", "-d"], check=True, capture_output=True, timeout=300)
    try:
        plan = labdir.read_plan(name)
        assert plan.lab_dir == str(folder.resolve())
        wait_ready(plan.start_order(), time.monotonic() + 60, lambda node: None)
        check = mxlab("check", name, "--json", check=False, timeout=300)
        report = json.loads(check.stdout)
        assert report["failed"] == 0 and report["passed"] > 0, check.stdout
    finally:
        subprocess.run([COMPOSE, *project, "down", "-v"], capture_output=True, timeout=300)
    flt = {"label": f"mxlab.lab={NAME}"}
    assert DOCKER.containers.list(all=True, filters=flt) == []
    assert DOCKER.networks.list(filters=flt) == []


def test_compose_runs_each_kind_its_way_and_no_external(tmp_path: Path) -> None:
    """Postfix and Dovecot nodes get their kind's image and command; a sink runs our node
    program; an external node gets no service; a stack refuses kinds it cannot carry."""
    from mxlab.lab.compose import compose, stack
    from mxlab.lab.errors import LabError
    from mxlab.lab.topology import parse_topology

    from .test_external_sink import topology

    mixed = make_plan(
        load_topology(TOPOLOGIES / "mixed.yaml"),
        runtime="docker",
        lab_dir=tmp_path / "m",
        subnet="172.30.253.0/24",  # an odd /24, as a stack needs
    )
    doc = compose(mixed, {"postfix": "debian-mail:x", "dovecot": "debian-mail:x"})
    for name, node in mixed.nodes.items():
        service = doc["services"][name]
        assert service["working_dir"] == "/mxlab"
        if node.kind in ("postfix", "dovecot"):
            assert service["image"] == "debian-mail:x"
            assert "mxlab.nodes" not in " ".join(service["command"])
        else:
            assert service["command"][1:4] == ["-m", "mxlab.nodes", node.role]
    with pytest.raises(LabError, match="postfix"):
        stack(mixed)
    sinks = make_plan(
        parse_topology(yaml.safe_dump(topology(2525)), "t.yaml"),
        runtime="docker",
        lab_dir=tmp_path / "s",
        subnet="172.30.251.0/24",
    )
    services = compose(sinks)["services"]
    assert "hostsink" not in services
    assert services["catch"]["command"][1:4] == ["-m", "mxlab.nodes", "sink"]
    assert all("hostsink" not in s["depends_on"] for s in services.values())
