"""The swarm runtime on a single-node Swarm: the lab on an attachable overlay keeps its
addresses, delivers, survives kill/start, and `down` leaves nothing behind; the engine
leaves swarm mode only if this module put it there."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.lab import labdir
from mxlab.lab.image import IMAGE
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import TopologyError, load_topology, parse_topology

from .conftest import DOCKER, TOPOLOGIES, needs_docker, wait_for
from .test_lab_local import mxlab

TWO = TOPOLOGIES / "two-domains.yaml"
LAB = "two-domains"


def _swarm_state() -> str:
    assert DOCKER is not None
    return str(DOCKER.info()["Swarm"]["LocalNodeState"])


def _labelled(lab: str) -> tuple[list, list, list]:
    assert DOCKER is not None
    flt = {"label": f"mxlab.lab={lab}"}
    swarm = _swarm_state() == "active"
    return (
        DOCKER.containers.list(all=True, filters=flt),
        DOCKER.networks.list(filters=flt),
        DOCKER.services.list(filters=flt) if swarm else [],
    )


def _routes_in(subnet: str) -> list[str]:
    """Host routes to the lab subnet (the gateway's route must go with the lab)."""
    from mxlab.lab.runtime.swarm import host_routes

    return [
        r for r in host_routes() if ipaddress.ip_network(r).overlaps(ipaddress.ip_network(subnet))
    ]


def _gwbridge() -> list:
    """Swarm's docker_gwbridge, if there is one (the name filter matches substrings)."""
    assert DOCKER is not None
    found = DOCKER.networks.list(names=["docker_gwbridge"])
    return [net for net in found if net.name == "docker_gwbridge"]


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A single-node Swarm: this engine's own, else one made here and left at the end."""
    assert DOCKER is not None
    state = _swarm_state()
    made = False
    had_bridge = bool(_gwbridge())
    if state == "inactive":
        try:
            DOCKER.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        except Exception as exc:  # the engine refuses (rootless, old): nothing to test
            pytest.skip(f"cannot make a single-node swarm here: {exc}")
        made = True
    elif not DOCKER.info()["Swarm"].get("ControlAvailable"):
        pytest.skip("this engine is a swarm worker: the tests need a manager")
    try:
        yield
    finally:
        if made:
            DOCKER.swarm.leave(force=True)
            assert _swarm_state() == "inactive"
            if not had_bridge:  # swarm's bridge outlives `leave`, holding a /16 of the pool
                for net in _gwbridge():
                    net.remove()


@pytest.fixture
def engine_by_label(swarm: None) -> Iterator[None]:
    """This swarm node labelled with this engine's URL (mxlab.engine), then unlabelled."""
    assert DOCKER is not None
    node = DOCKER.nodes.list()[0]
    spec = node.attrs["Spec"]
    url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    node.update(spec | {"Labels": (spec.get("Labels") or {}) | {"mxlab.engine": url}})
    try:
        yield
    finally:
        node.reload()
        node.update(node.attrs["Spec"] | {"Labels": spec.get("Labels") or {}})


@pytest.mark.usefixtures("mxlab_home")
class TestSwarm:
    pytestmark = needs_docker

    def test_not_a_manager_says_what_to_do(self) -> None:
        """Runs before the module's swarm exists (where the engine starts outside one)."""
        if _swarm_state() != "inactive":
            pytest.skip("the engine is in a swarm already")
        proc = mxlab("up", str(TWO), "--runtime", "swarm", check=False)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "docker swarm init" in proc.stderr
        assert _labelled(LAB) == ([], [], [])

    @pytest.mark.usefixtures("swarm")
    @pytest.mark.usefixtures("engine_by_label")
    def test_up_check_kill_start_down(self) -> None:
        """The swarm node is driven through the engine URL in its label, as another
        machine would be: its containers get their folders copied in, not mounted."""
        mxlab("up", str(TWO), "--runtime", "swarm", timeout=1200)
        try:
            plan = labdir.read_plan(LAB)
            assert plan.runtime == "swarm"
            containers, networks, _ = _labelled(LAB)
            overlay = next(n for n in networks if n.name == f"mxlab-{LAB}")
            assert overlay.attrs["Driver"] == "overlay" and overlay.attrs["Attachable"]
            nodes = [c for c in containers if "mxlab.node" in c.labels]
            assert len(nodes) == 5
            for c in nodes:
                ip = c.attrs["NetworkSettings"]["Networks"][overlay.name]["IPAddress"]
                assert ip == plan.nodes[c.labels["mxlab.node"]].address
                assert c.labels["mxlab.engine"]  # the swarm node it was placed on
                assert not c.attrs["HostConfig"]["Binds"]
            status = json.loads(mxlab("status", "--json").stdout)
            assert status["runtime"] == "swarm" and len(status["nodes"]) == 5
            check = json.loads(mxlab("check", "--json").stdout)
            assert check["failed"] == 0 and check["passed"] > 0, check

            mxlab("kill", "mx-beta")
            states = {
                n["node"]: n["state"] for n in json.loads(mxlab("status", "--json").stdout)["nodes"]
            }
            assert states["mx-beta"] != "running" and states["mx-alpha"] == "running"
            mxlab("start", "mx-beta")
            sent = json.loads(
                mxlab(
                    "send", "--from", "alice@alpha.test", "--to", "bob@beta.test", "--json"
                ).stdout
            )
            assert sent["failed"] == 0 and sent["passed"] == 1, sent
        finally:
            mxlab("down", LAB)
        assert _labelled(LAB) == ([], [], [])
        assert _routes_in(plan.subnet) == []

    @pytest.mark.usefixtures("swarm")
    def test_placement_nowhere_is_one_line(self, tmp_path: Path) -> None:
        relay = "  mx-beta:\n    kind: relay\n"
        text = TWO.read_text().replace(relay, relay + "    placement: zone=nowhere\n")
        topo = tmp_path / "two.yaml"
        topo.write_text(text)
        proc = mxlab("up", str(topo), "--runtime", "swarm", check=False, timeout=1200)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "mx-beta" in proc.stderr and "zone=nowhere" in proc.stderr
        assert _labelled(LAB) == ([], [], [])

    @pytest.mark.usefixtures("swarm")
    def test_exported_stack_delivers(self, tmp_path: Path) -> None:
        """`export compose --swarm` deployed with `docker stack deploy`: each node takes
        its planned address, and mail crosses the stack (sent from inside it: the host
        has no way onto a stack's overlay)."""
        assert DOCKER is not None
        topo = tmp_path / "stack.yaml"
        topo.write_text(TWO.read_text().replace(f"name: {LAB}", "name: stack-two"))
        folder = tmp_path / "stack"
        mxlab("export", "compose", str(topo), "--swarm", "-o", str(folder))
        stack = "mxlab-stack-two"
        deploy = ["docker", "stack", "deploy", "-c", "stack.yml", stack]
        subprocess.run(deploy, cwd=folder, check=True, capture_output=True, timeout=120)
        try:
            mx = wait_for(lambda: _task(stack, "mx-alpha"), 60, "mx-alpha's task")
            store = wait_for(lambda: _task(stack, "store-beta"), 60, "store-beta's task")
            wait_for(lambda: mx.exec_run(["python3", "-c", SEND]).exit_code == 0, 60, "250")
            new = "/mxlab/state/mail/bob@beta.test/new"
            wait_for(lambda: store.exec_run(["ls", new]).output.strip(), 30, "bob's mail")
        finally:
            subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=120)
            ps = ["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}"]
            gone = lambda: not subprocess.run(ps, capture_output=True, text=True).stdout.strip()  # noqa: E731
            wait_for(gone, 60, "the stack's containers to go")
            label = f"label=com.docker.stack.namespace={stack}"
            vols = ["docker", "volume", "ls", "-q", "--filter", label]
            names = subprocess.run(vols, capture_output=True, text=True).stdout.split()
            if names:  # the nodes' state volumes: `stack rm` leaves them
                subprocess.run(["docker", "volume", "rm", *names], capture_output=True, timeout=60)


# From inside the stack: bob's MX by the lab's DNS, on port 25, as another MX would.
SEND = (
    "import smtplib; s = smtplib.SMTP('mx-beta.beta.test', 25, timeout=10); "
    "s.sendmail('alice@alpha.test', ['bob@beta.test'], 'Subject: stack\\r\\n\\r\\nhi\\r\\n')"
)


def _task(stack: str, service: str):  # noqa: ANN202 - a running Container or None
    assert DOCKER is not None
    flt = {"label": f"com.docker.swarm.service.name={stack}_{service}", "status": "running"}
    found = DOCKER.containers.list(filters=flt)
    return found[0] if found else None


def test_bad_placement_is_a_located_error() -> None:
    text = TWO.read_text().replace(
        "  ns:\n    kind: dns\n", "  ns:\n    kind: dns\n    placement: 'a b'\n"
    )
    with pytest.raises(TopologyError) as err:
        parse_topology(text, "two.yaml")
    assert str(err.value).startswith("two.yaml: nodes.ns.placement: 'a b' is neither")


def test_round_robin_respects_placement(tmp_path: Path) -> None:
    """Placement alone (no engine): the unplaced nodes spread evenly; a labelled one
    goes where its label is."""
    from mxlab.lab.runtime.swarm import Engine, SwarmRuntime

    topo = load_topology(TWO)
    topo.nodes["store-beta"].placement = "zone=b"
    topo.nodes["ns"].placement = "h1"
    plan = make_plan(topo, runtime="swarm", lab_dir=tmp_path, subnet="10.213.9.0/24")
    rt = SwarmRuntime.__new__(SwarmRuntime)
    rt._engines = [
        Engine("h1", {}, None),
        Engine("h2", {"zone": "b"}, "ssh://h2"),
        Engine("h3", {}, "ssh://h3"),
    ]
    placed = {node: e.hostname for node, e in rt.place(plan).items()}
    assert placed["ns"] == "h1" and placed["store-beta"] == "h2"
    load = [list(placed.values()).count(h) for h in ("h1", "h2", "h3")]
    assert max(load) - min(load) <= 1, placed


class _Images:
    """A remote engine without the node image: what `docker load` would receive."""

    def __init__(self) -> None:
        self.loaded = b""

    def get(self, ref: str) -> None:
        import docker.errors

        raise docker.errors.ImageNotFound(ref)

    def load(self, data: Iterator[bytes]) -> None:
        for chunk in data:
            if len(self.loaded) < 1024:
                self.loaded += chunk[:1024]


@pytest.mark.usefixtures("mxlab_home")
def test_image_goes_to_an_engine_without_it(tmp_path: Path) -> None:
    """The node image is streamed from this engine (docker save) into an engine that
    lacks it (docker load), and only there."""
    if DOCKER is None:
        pytest.skip("no Docker engine")
    from types import SimpleNamespace

    from mxlab.lab.runtime.swarm import Engine, SwarmRuntime

    plan = make_plan(load_topology(TWO), runtime="swarm", lab_dir=tmp_path, subnet="10.213.9.0/24")
    remote = SimpleNamespace(images=_Images())
    rt = SwarmRuntime.__new__(SwarmRuntime)
    rt.client = DOCKER
    rt._engines = [Engine("here", {}, None, DOCKER), Engine("there", {}, "ssh://x", remote)]  # type: ignore[arg-type]
    said: list[str] = []
    rt._image(plan, said.append)
    assert remote.images.loaded[257:262] == b"ustar"  # a tar stream: docker save's output
    assert said[-1] == f"copying {IMAGE} to there (docker save | docker load)"


@pytest.mark.usefixtures("mxlab_home")
def test_other_kinds_images_go_to_their_nodes_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Postfix node placed on another engine finds its kind's image there too."""
    if DOCKER is None:
        pytest.skip("no Docker engine")
    from types import SimpleNamespace

    from mxlab.lab.runtime.docker import DockerRuntime
    from mxlab.lab.runtime.swarm import Engine, SwarmRuntime

    topo = load_topology(TOPOLOGIES / "mixed.yaml")
    postfix = next(n for n, spec in topo.nodes.items() if spec.kind == "postfix")
    for name, spec in topo.nodes.items():
        spec.placement = "there" if name == postfix else "here"
    plan = make_plan(topo, runtime="swarm", lab_dir=tmp_path, subnet="10.213.9.0/24")
    stand_in = "mxlab-kind-stand-in:1"  # the node image under another name, built already
    DOCKER.images.get(IMAGE).tag(stand_in)
    try:
        monkeypatch.setattr(
            DockerRuntime, "_kind_images", lambda self, plan, image, progress: {"postfix": stand_in}
        )
        remote = SimpleNamespace(images=_Images())
        rt = SwarmRuntime.__new__(SwarmRuntime)
        rt.client = DOCKER
        rt._engines = [Engine("here", {}, None, DOCKER), Engine("there", {}, "ssh://x", remote)]  # type: ignore[arg-type]
        said: list[str] = []
        rt._image(plan, said.append)
        rt._kind_images(plan, IMAGE, said.append)
        assert said[-1] == f"copying {stand_in} to there (docker save | docker load)"
    finally:
        DOCKER.images.remove(stand_in)
