"""Shared fixtures: a private MXLAB_HOME so tests never touch a user's labs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


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


def _why_no_docker() -> str | None:
    """Why docker tests cannot run here: no engine, or no way to build the node image."""
    if DOCKER is None:
        return "no Docker engine"
    import shutil

    from mxlab.lab.image import PYTHON_BASES

    have = {tag for image in DOCKER.images.list() for tag in image.tags}
    built = any(tag.startswith("mxlab-node:") for tag in have)
    if shutil.which("debootstrap") is None and not built and not have & set(PYTHON_BASES):
        return "no Python base image and no debootstrap to build the node image (apt install it)"
    return None


DOCKER = _docker_engine()
WHY_NO_DOCKER = _why_no_docker()
needs_docker = [
    pytest.mark.docker,
    pytest.mark.skipif(WHY_NO_DOCKER is not None, reason=WHY_NO_DOCKER or ""),
    pytest.mark.timeout(1200),  # whichever docker test runs first builds the node image
]


@pytest.fixture(scope="module")
def dns_resolver_restored() -> Iterator[None]:
    """The auth checks point dnspython's default resolver at a lab DNS node (a relay does
    so for its process); put the test process's own back after the module."""
    import dns.resolver

    saved = dns.resolver.default_resolver
    yield
    dns.resolver.default_resolver = saved


@pytest.fixture
def cleanup() -> Iterator[list]:
    """Stop every sink, stub and node a test started (``run``), even when it fails."""
    started: list = []
    yield started
    for thing in reversed(started):
        thing.stop()


def run(cleanup: list, thing):  # noqa: ANN001, ANN201 - returns what it was given
    """Start ``thing`` (if it starts) and have ``cleanup`` stop it."""
    cleanup.append(thing)
    return thing.start() if hasattr(thing, "start") else thing
