"""Which runtime a command gets: docker where an engine answers, local otherwise (said on
the first line); asking for docker without an engine is one line with the way out."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import TOPOLOGIES
from .test_lab_local import mxlab

TWO = TOPOLOGIES / "two-domains.yaml"


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


def test_docker_without_an_engine_is_one_line_naming_the_fallback(
    no_engine: None, mxlab_home: Path
) -> None:
    proc = mxlab("up", str(TWO), "--runtime", "docker", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no Docker engine" in lines[0] and "--runtime local" in lines[0]


def test_auto_falls_back_to_local_and_says_so_first(no_engine: None, mxlab_home: Path) -> None:
    proc = mxlab("run", str(TWO), "--json")
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("runtime: local"), proc.stderr
    assert '"failed": 0' in proc.stdout


def test_unknown_runtime_is_refused(mxlab_home: Path) -> None:
    proc = mxlab("up", str(TWO), "--runtime", "vm", check=False)
    assert proc.returncode == 2 and "use docker, local, swarm, hosts or auto" in proc.stderr
