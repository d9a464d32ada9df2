"""The node image: mirror discovery for debootstrap, and rebuilds only when content changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker import errors as docker_errors

from mxlab.lab import image

from .conftest import DOCKER, needs_docker


def _host(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


OS = {"etc/os-release": 'PRETTY_NAME="Debian"\nVERSION_CODENAME=bookworm\n'}


def test_mirror_comes_from_the_deb822_stanza_of_the_hosts_release(tmp_path: Path) -> None:
    root = _host(tmp_path, OS | {
        "etc/apt/sources.list.d/other.sources":
            "Types: deb\nURIs: http://mirror.invalid/other\nSuites: nodistro\n",
        "etc/apt/sources.list.d/debian.sources":
            "Types: deb-src\nURIs: http://mirror.invalid/src\nSuites: bookworm\n\n"
            "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n",
    })  # fmt: skip
    assert image.host_mirror(root) == ("bookworm", "http://mirror.invalid/debian")


def test_mirror_from_a_one_line_sources_list(tmp_path: Path) -> None:
    root = _host(tmp_path, OS | {
        "etc/apt/sources.list":
            "# deb http://old.invalid bookworm main\n"
            "deb [arch=amd64] http://mirror.invalid/debian bookworm main\n",
    })  # fmt: skip
    assert image.host_mirror(root) == ("bookworm", "http://mirror.invalid/debian")


def test_no_source_for_the_release_is_one_clear_error(tmp_path: Path) -> None:
    root = _host(tmp_path, OS | {"etc/apt/sources.list": "deb http://m.invalid bullseye main\n"})
    with pytest.raises(image.ImageBuildError, match="no apt source for bookworm"):
        image.host_mirror(root)


def test_content_hash_follows_base_and_code() -> None:
    assert image.content_hash("sha256:a") == image.content_hash("sha256:a")
    assert image.content_hash("sha256:a") != image.content_hash("sha256:b")


class _Images:
    """The image calls ``_base`` makes: these refs are on the engine; a pull fails the test."""

    def __init__(self, local: set[str]) -> None:
        self.local = local

    def get(self, ref: str) -> str:
        if ref not in self.local:
            raise docker_errors.ImageNotFound(ref)
        return ref

    def pull(self, ref: str) -> None:
        raise AssertionError(f"pulled {ref} with a base at hand")


class _Engine:
    def __init__(self, local: set[str]) -> None:
        self.images = _Images(local)


def test_a_base_at_hand_is_used_without_asking_a_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(image, "_debootstrap_ref", lambda: "mxlab-base:bookworm-x")
    made = "mxlab-base:bookworm-x"
    assert image._base(_Engine({made}), print) == made  # type: ignore[arg-type]
    both = {made, image.PYTHON_BASES[1]}
    assert image._base(_Engine(both), print) == image.PYTHON_BASES[1]  # type: ignore[arg-type]


class TestOnTheEngine:
    pytestmark = needs_docker

    def test_ensure_image_builds_once_then_reuses(self) -> None:
        assert DOCKER is not None
        tag = image.ensure_image(DOCKER)
        built = DOCKER.images.get(tag)
        assert built.labels[image.CONTENT_LABEL]
        assert image.ensure_image(DOCKER) == tag
        assert DOCKER.images.get(tag).id == built.id  # not rebuilt: the content label matched
        out = DOCKER.containers.run(tag, ["python3", "-m", "mxlab.nodes", "--help"], remove=True)
        assert b"relay" in out
        rebuilt = DOCKER.images.get(image.ensure_image(DOCKER, force=True))
        assert rebuilt.id != built.id
        with pytest.raises(docker_errors.ImageNotFound):  # the replaced build does not linger
            DOCKER.images.get(built.id)

    def test_runtime_volume_is_filled_once_and_serves_the_nodes_python(self) -> None:
        assert DOCKER is not None
        tag = image.ensure_image(DOCKER)
        name = image.runtime_volume(DOCKER, tag)
        assert image.runtime_volume(DOCKER, tag) == name
        labels = DOCKER.volumes.get(name).attrs["Labels"]
        assert labels[image.RUNTIME_LABEL] == DOCKER.images.get(tag).id
        assert not DOCKER.containers.list(all=True, filters={"label": image.RUNTIME_LABEL})
        mount = {name: {"bind": image.RUNTIME_DIR, "mode": "ro,nocopy"}}
        code = "import json, sys, mxlab.nodes; print(sys.executable, json.__file__);"
        code += "print(*sorted({l.split()[-1] for l in open('/proc/self/maps') if '.so' in l}))"
        out = DOCKER.containers.run(tag, ["python3", "-c", code], volumes=mount, remove=True)
        first, libraries = out.decode().splitlines()
        assert first.split() == [
            f"{image.RUNTIME_DIR}/bin/python3", f"{image.RUNTIME_DIR}/stdlib/json/__init__.py"
        ]  # fmt: skip
        elsewhere = [p for p in libraries.split() if not p.startswith(image.RUNTIME_DIR)]
        assert len(elsewhere) == 1 and "/ld-linux" in elsewhere[0]  # the loader alone

    def test_an_empty_volume_the_engine_made_is_filled(self, tmp_path: Path) -> None:
        """A container mounting a runtime volume removed meanwhile makes the engine create
        it empty, without labels: the next fill replaces it."""
        assert DOCKER is not None
        (tmp_path / "Dockerfile").write_text(f"FROM {image.ensure_image(DOCKER)}\nLABEL t=1\n")
        other, _ = DOCKER.images.build(
            path=str(tmp_path), tag="mxlab-node-test:empty-volume", rm=True
        )
        name = f"mxlab-runtime-{other.id.split(':')[-1][:12]}"
        DOCKER.volumes.create(name)
        try:
            assert image.runtime_volume(DOCKER, other.id) == name
            mount = {name: {"bind": image.RUNTIME_DIR, "mode": "ro,nocopy"}}
            out = DOCKER.containers.run(
                other.id, ["python3", "-c", "print(1)"], volumes=mount, remove=True
            )
            assert out == b"1\n"
        finally:
            DOCKER.volumes.get(name).remove()
            DOCKER.images.remove(other.id)
