"""The node image ``mxlab-node:<version>``: built once, rebuilt only when the package changes.

Where a Python base image is on the engine or can be pulled, the image is built FROM it.
Where no registry answers (an engine with no images at all), a Debian base is made with
debootstrap from the host's own apt mirror and ``docker import``-ed as ``mxlab-base``.
Either way the build context carries a wheelhouse made on the host and the build runs with
no network: nothing inside the build reaches the internet.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import docker
import docker.errors

import mxlab
from mxlab.lab.errors import LabError

IMAGE = f"mxlab-node:{mxlab.__version__}"
CONTENT_LABEL = "mxlab.content"
RUNTIME_DIR = "/opt/mxlab"  # the venv, the node code and the stdlib: all a node reads
RUNTIME_LABEL = "mxlab.runtime"  # on runtime volumes and their filling containers: the image id
PYTHON_BASES = ("python:3.11-slim", "python:3.12-slim", "python:3.11", "python:3-slim")
# What a node process imports; the lab side (docker SDK, typer, rich...) stays on the host.
NODE_DEPENDENCIES: tuple[str, ...] = ("aiosmtpd", "dnslib", "dnspython", "pydantic", "uvloop")
# the relay's mail authentication (mxlab.nodes.mailauth)
NODE_DEPENDENCIES += ("dkimpy", "pynacl", "pyspf", "authres", "srslib")
NODE_PACKAGES = ("nodes", "dns")  # subpackages of mxlab a node runs
# iproute2 and nftables: link faults (tc, and packet loss where the kernel has no netem)
DEBOOTSTRAP_PACKAGES = (
    "python3",
    "python3-venv",
    "iproute2",
    "nftables",
    "ca-certificates",
    "procps",
)

Progress = Callable[[str], None]


class ImageBuildError(LabError):
    """The node image could not be built; the message says which step and why."""


def _package_root() -> Path:
    return Path(mxlab.__file__).parent


def _node_sources() -> list[Path]:
    root = _package_root()
    files = [root / "__init__.py"]
    for sub in NODE_PACKAGES:
        files += sorted((root / sub).rglob("*.py"))
    return files


def _pins() -> list[str]:
    """The host's installed versions: the image runs what the tests ran against."""
    try:
        return [f"{d}=={importlib.metadata.version(d)}" for d in NODE_DEPENDENCIES]
    except importlib.metadata.PackageNotFoundError as exc:
        raise ImageBuildError(f"node dependency {exc} is not installed (pip install .)") from None


def content_hash(base_id: str) -> str:
    """Changes when the node code, its pinned dependencies or the base image change."""
    h = hashlib.sha256(base_id.encode())
    root = _package_root()
    for path in _node_sources():
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    h.update("\n".join(_pins()).encode())
    h.update(DOCKERFILE.encode())
    return h.hexdigest()[:16]


# -- base image ---------------------------------------------------------------------
def _local_image(client: docker.DockerClient, ref: str):
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _base(client: docker.DockerClient, progress: Progress) -> str:
    """A Python base on the engine, else the debootstrap base made before, else a pulled
    one, else a new debootstrap base: no pull while a base is at hand (each `up` asks for
    the image, and a pull waits for a registry that may never answer)."""
    for ref in PYTHON_BASES:
        if _local_image(client, ref) is not None:
            return ref
    with contextlib.suppress(ImageBuildError):  # not a Debian host: no such base
        if _local_image(client, ref := _debootstrap_ref()) is not None:
            return ref
    try:
        client.images.pull(PYTHON_BASES[0])
    except docker.errors.APIError:
        return _debootstrap_base(client, progress)
    progress(f"pulled {PYTHON_BASES[0]}")
    return PYTHON_BASES[0]


def host_mirror(root: Path = Path("/")) -> tuple[str, str]:
    """(suite, mirror URI) from the host's apt sources: debootstrap fetches where apt does."""
    codename = ""
    for line in (root / "etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip('"')
    if not codename:
        raise ImageBuildError("cannot tell the host's Debian release (/etc/os-release)")
    sources = root / "etc/apt/sources.list.d"
    for path in sorted(sources.glob("*.sources")):  # deb822 stanzas
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "#")):
                    fields[key.strip()] = value.split()
            if "deb" in fields.get("Types", []) and codename in fields.get("Suites", []):
                return codename, fields["URIs"][0]
    for path in [root / "etc/apt/sources.list", *sorted(sources.glob("*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                return codename, words[1]
    raise ImageBuildError(f"no apt source for {codename} on this host to debootstrap from")


def _debootstrap_ref() -> str:
    """``mxlab-base:<suite>-<packages>``: the debootstrap base for this host's release."""
    suite, _ = host_mirror()
    packages = hashlib.sha256(" ".join(DEBOOTSTRAP_PACKAGES).encode()).hexdigest()[:8]
    return f"mxlab-base:{suite}-{packages}"


def _debootstrap_base(client: docker.DockerClient, progress: Progress) -> str:
    """The debootstrap base, made with debootstrap and imported; reused."""
    ref = _debootstrap_ref()
    if _local_image(client, ref) is not None:
        return ref
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "no Python base image and no registry; install debootstrap "
            "(apt-get install debootstrap) or use --runtime local"
        )
    progress(f"no registry answers: building {ref} with debootstrap (a few minutes, once)")
    suite, mirror = host_mirror()
    repository, tag = ref.split(":")
    _debootstrap_import(client, suite, mirror, DEBOOTSTRAP_PACKAGES, repository, tag, [])
    return ref


def packages_image(
    client: docker.DockerClient, packages: Sequence[str], progress: Progress = lambda _: None
) -> str:
    """An image of the debootstrap base plus Debian's own ``packages`` (postfix, dovecot,
    an SSH server...), built on first use and reused while its content label matches: a
    hash of the suite and the package list, so changing the list builds a new one."""
    suite, mirror = host_mirror()
    wanted = sorted({*DEBOOTSTRAP_PACKAGES, *packages})
    digest = hashlib.sha256("\n".join([suite, *wanted]).encode()).hexdigest()[:12]
    ref = f"mxlab-debian:{suite}-{digest}"
    have = _local_image(client, ref)
    if have is not None and have.labels.get(CONTENT_LABEL) == digest:
        return ref
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            f"building an image with {', '.join(packages)} needs debootstrap "
            "(apt-get install debootstrap)"
        )
    progress(f"building {ref} with {', '.join(packages)} (debootstrap, once)")
    label = [f"LABEL {CONTENT_LABEL}={digest}"]
    _debootstrap_import(client, suite, mirror, wanted, "mxlab-debian", ref.split(":")[1], label)
    return ref


def _debootstrap_import(
    client: docker.DockerClient,
    suite: str,
    mirror: str,
    packages: Sequence[str],
    repository: str,
    tag: str,
    changes: list[str],
) -> None:
    """debootstrap a minimal ``suite`` with ``packages`` and ``docker import`` it."""
    ref = f"{repository}:{tag}"
    with tempfile.TemporaryDirectory(prefix="mxlab-rootfs-") as rootfs:
        cmd = [
            "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
            suite, rootfs, mirror,
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["?"]
            raise ImageBuildError(f"debootstrap {suite} from {mirror} failed: {tail[0]}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(Path(rootfs, cache), ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            client.api.import_image_from_stream(
                _chunks(tar.stdout), repository=repository, tag=tag, changes=changes
            )
        finally:
            tar.stdout.close()
            tar.wait()
    if _local_image(client, ref) is None:
        raise ImageBuildError(f"docker import of the debootstrap tree did not create {ref}")


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(1 << 20):
        yield chunk


# -- node image ---------------------------------------------------------------------
# Everything a node maps or reads as it starts lies under RUNTIME_DIR (see runtime_volume):
# the interpreter (a copy, not a link), the stdlib (moved there, a symlink left behind,
# and first on the path) and the shared libraries they load (found with ldd).
DOCKERFILE = """\
FROM {base}
COPY wheels /tmp/wheels
RUN python3 -m venv --copies /opt/mxlab \\
 && /opt/mxlab/bin/pip install --no-index --no-cache-dir --find-links /tmp/wheels {pins} \\
 && rm -rf /tmp/wheels \\
 && stdlib="$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \\
 && mv "$stdlib" /opt/mxlab/stdlib && ln -s /opt/mxlab/stdlib "$stdlib" \\
 && mkdir /opt/mxlab/syslib \\
 && find /opt/mxlab -name '*.so*' -type f | xargs ldd /opt/mxlab/bin/python3 \\
  | awk '$2 == "=>" && $3 ~ /^\\// {{print $3}}' | sort -u | xargs cp -L -t /opt/mxlab/syslib
COPY mxlab /opt/mxlab/lib/mxlab
RUN /opt/mxlab/bin/python -m compileall -q /opt/mxlab/lib /opt/mxlab/stdlib
ENV PATH=/opt/mxlab/bin:$PATH LD_LIBRARY_PATH=/opt/mxlab/syslib \
    PYTHONPATH=/opt/mxlab/stdlib:/opt/mxlab/stdlib/lib-dynload:/opt/mxlab/lib \
    PYTHONDONTWRITEBYTECODE=1 MALLOC_ARENA_MAX=2
WORKDIR /mxlab
"""


def _wheelhouse(dest: Path, pins: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest), *pins]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["?"]
        raise ImageBuildError(f"building the wheelhouse failed: {tail[0]}")


def ensure_image(
    client: docker.DockerClient, force: bool = False, progress: Progress = lambda _: None
) -> str:
    """The node image's tag, building it only when missing or out of date."""
    base = _base(client, progress)
    want = content_hash(client.images.get(base).id)
    have = _local_image(client, IMAGE)
    if have is not None and not force and have.labels.get(CONTENT_LABEL) == want:
        return IMAGE
    progress(f"building {IMAGE} from {base}")
    pins = _pins()
    with tempfile.TemporaryDirectory(prefix="mxlab-image-") as ctx:
        _wheelhouse(Path(ctx, "wheels"), pins)
        pkg = Path(ctx, "mxlab")
        for src in _node_sources():
            dst = pkg / src.relative_to(_package_root())
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        Path(ctx, "Dockerfile").write_text(DOCKERFILE.format(base=base, pins=" ".join(pins)))
        try:
            client.images.build(
                path=ctx, tag=IMAGE, rm=True, forcerm=True, network_mode="none", nocache=force,
                labels={CONTENT_LABEL: want, "mxlab.version": mxlab.__version__},
            )  # fmt: skip
        except docker.errors.BuildError as exc:
            raise ImageBuildError(f"building {IMAGE} failed: {exc.msg}") from None
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building {IMAGE} failed: {exc.explanation}") from None
    if have is not None and have.id != client.images.get(IMAGE).id:
        with contextlib.suppress(docker.errors.APIError):  # the old build, now untagged,
            client.images.remove(have.id)  # goes unless a container still uses it
    return IMAGE


# -- runtime volume -----------------------------------------------------------------
def runtime_volume(client: docker.DockerClient, image: str = IMAGE) -> str:
    """A volume holding ``image``'s RUNTIME_DIR, for node containers to mount over it
    (read-only).

    On an engine whose storage driver is fuse-overlayfs (rootless Docker, Docker in
    Docker) every file a starting node reads goes through a FUSE daemon, and each
    container's page cache is its own: a relay took 0.22 s to import instead of 0.11 s,
    and the interpreter and libcrypto it maps (10 MiB) were counted whole in every node.
    A volume is a plain directory, read at native speed and cached once for all nodes.
    The engine fills an empty volume from the image when a container is created with it;
    that is done once per image build, under a lock, so no lab mounts a half-filled one.
    """
    built = client.images.get(image).id
    name = f"mxlab-runtime-{built.split(':')[-1][:12]}"
    labels = {RUNTIME_LABEL: built}
    with _runtime_lock():
        try:
            if client.volumes.get(name).attrs.get("Labels") == labels:
                return name
            client.volumes.get(name).remove()  # unlabelled: made empty by the engine
        except docker.errors.NotFound:
            pass
        client.volumes.create(name, labels=labels)
        try:
            mount = {name: {"bind": RUNTIME_DIR, "mode": "ro"}}
            client.containers.create(image, ["true"], labels=labels, volumes=mount).remove()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                client.volumes.get(name).remove()
            raise ImageBuildError(f"cannot fill volume {name}: {exc.explanation}") from None
        _remove_old_runtimes(client)
    return name


@contextlib.contextmanager
def _runtime_lock() -> Iterator[None]:
    """One filler at a time on this host: two `up`s racing on a new build would otherwise
    see a volume the other is still filling."""
    path = Path(tempfile.gettempdir()) / f"mxlab-runtime-{os.getuid()}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_old_runtimes(client: docker.DockerClient) -> None:
    """Volumes whose build is gone: ensure_image removes a replaced build unless a
    container still uses it (then its volume stays too)."""
    for volume in client.volumes.list(filters={"label": [RUNTIME_LABEL]}):
        if _local_image(client, (volume.attrs.get("Labels") or {})[RUNTIME_LABEL]) is None:
            with contextlib.suppress(docker.errors.APIError):
                volume.remove()
