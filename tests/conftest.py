"""Shared fixtures: a private MXLAB_HOME so tests never touch a user's labs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"


@pytest.fixture
def mxlab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mxlab-home"
    monkeypatch.setenv("MXLAB_HOME", str(home))
    return home


def _docker_engine():  # noqa: ANN202 - a DockerClient or None
    try:
        import docker

        client = docker.from_env(timeout=900)
        client.ping()
    except Exception:  # no SDK, no socket, engine down: all mean "no docker here"
        return None
    return client


DOCKER = _docker_engine()
needs_docker = [
    pytest.mark.docker,
    pytest.mark.skipif(DOCKER is None, reason="no Docker engine"),
    pytest.mark.timeout(1200),  # whichever docker test runs first builds the node image
]
