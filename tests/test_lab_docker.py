"""The docker runtime: real containers on a lab network, built offline, torn down by label."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path

import docker.errors
from docker.types import IPAMConfig, IPAMPool

from mxlab.lab import labdir
from mxlab.lab.image import IMAGE, RUNTIME_DIR, RUNTIME_LABEL
from mxlab.lab.runtime.docker import DockerRuntime
from mxlab.lab.topology import load_topology

from .conftest import DOCKER, TOPOLOGIES, needs_docker
from .test_lab_local import mxlab

CLIENT = DOCKER
pytestmark = needs_docker
TWO = TOPOLOGIES / "two-domains.yaml"


def _labelled(lab: str) -> tuple[list, list]:
    assert CLIENT is not None
    flt = {"label": f"mxlab.lab={lab}"}
    return CLIENT.containers.list(all=True, filters=flt), CLIENT.networks.list(filters=flt)


def test_run_builds_image_and_delivers(mxlab_home: Path) -> None:
    proc = mxlab("run", str(TWO), "--json", timeout=1200)  # default runtime: docker here
    report = json.loads(proc.stdout)
    assert report["failed"] == 0 and report["passed"] == 12, proc.stdout
    assert all(r["route_ok"] and r["bytes_equal"] for r in report["results"])
    assert "runtime: local" not in proc.stderr
    assert _labelled("two-domains") == ([], [])


def test_up_status_refuse_second_up_down(mxlab_home: Path) -> None:
    mxlab("up", str(TWO), "--runtime", "docker", timeout=1200)
    try:
        plan = labdir.read_plan("two-domains")
        assert plan.runtime == "docker"
        containers, networks = _labelled("two-domains")
        assert len(containers) == 5 and len(networks) == 1
        for c in containers:
            assert c.status == "running"
            assert c.name == f"mxlab-two-domains_{c.labels['mxlab.node']}"
            assert c.labels["mxlab.home"] == str(mxlab_home.resolve())
            assert c.labels["mxlab.role"] in ("dns", "relay", "store")
            node = plan.nodes[c.labels["mxlab.node"]]
            ip = c.attrs["NetworkSettings"]["Networks"]["mxlab-two-domains"]["IPAddress"]
            assert ip == node.address
            # our node programs read their Python from the build's runtime volume
            runtime = [m for m in c.attrs["Mounts"] if m["Destination"] == RUNTIME_DIR]
            assert [(m["Type"], m["RW"]) for m in runtime] == [("volume", False)]
            built = CLIENT.volumes.get(runtime[0]["Name"]).attrs["Labels"][RUNTIME_LABEL]
            assert built == c.image.id
        # the containers resolve lab names through the lab DNS
        code = mxlab("exec", "mx-alpha", "--", "python3", "-c",
                     "import socket; print(socket.gethostbyname('mx-beta.beta.test'))")  # fmt: skip
        assert plan.nodes["mx-beta"].address in code.stdout
        again = mxlab("up", str(TWO), "--runtime", "docker", check=False)
        assert again.returncode == 2 and "already running" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        check = mxlab("check", "--json")
        assert json.loads(check.stdout)["failed"] == 0
    finally:
        # down works from labels alone: remove the lab directory first
        import shutil

        shutil.rmtree(labdir.lab_dir("two-domains"))
        status = mxlab("status", "two-domains")
        assert "from labels" in status.stdout and status.stdout.count("running") == 5
        mxlab("down", "two-domains")
    assert _labelled("two-domains") == ([], [])


def test_pinned_overlapping_subnet_names_the_other_network(
    mxlab_home: Path, tmp_path: Path
) -> None:
    assert CLIENT is not None
    other = CLIENT.networks.create(
        "mxlab-test-other",
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.231.0.0/16")]),
        labels={"mxlab.test": "1"},
    )
    try:
        path = tmp_path / "lab.yaml"
        path.write_text(TWO.read_text() + "settings:\n  docker_subnet: 10.231.7.0/24\n")
        proc = mxlab("up", str(path), "--runtime", "docker", check=False)
        assert proc.returncode == 2
        assert "mxlab-test-other" in proc.stderr and "10.231.7.0/24" in proc.stderr
    finally:
        other.remove()


def test_a_network_of_the_same_name_is_cleared_or_named(mxlab_home: Path) -> None:
    """The engine lets two networks share a name and then starts no container on
    either: what this home's crashed run left is removed; another home's is named."""
    assert CLIENT is not None
    ours = {"mxlab.lab": "two-domains", "mxlab.home": str(mxlab_home.resolve())}
    # a crashed run's leftover on the /24 the lab would take: it is removed before the
    # lab takes its place, not counted as taken (the engine can even hand such a
    # network, made without a subnet, the whole of 172.30.0.0/16)
    first = DockerRuntime().choose_subnet(load_topology(TWO))
    leftover = CLIENT.networks.create(
        "mxlab-two-domains", labels=ours,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=first)]),
    )  # fmt: skip
    try:
        mxlab("up", str(TWO), "--runtime", "docker", timeout=1200)
        try:
            assert len(CLIENT.networks.list(names=["mxlab-two-domains"])) == 1
            assert labdir.read_plan("two-domains").subnet == first
        finally:
            mxlab("down", "two-domains")
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            leftover.remove()  # if up failed before clearing it, the next test is not hurt
    theirs = CLIENT.networks.create("mxlab-two-domains", labels=ours | {"mxlab.home": "/elsewhere"})
    try:
        proc = mxlab("up", str(TWO), "--runtime", "docker", check=False)
        assert proc.returncode == 2
        assert (
            proc.stderr.strip()
            .splitlines()[-1]
            .startswith("error: docker network mxlab-two-domains exists already")
        ), proc.stderr
        assert _labelled("two-domains")[0] == []
    finally:
        theirs.remove()


def test_a_full_pool_spills_labs_past_it(mxlab_home: Path) -> None:
    """Someone's network holds the whole first pool (the engine hands 172.30.0.0/16 to
    a network made without a subnet when its turn comes): labs take a /24 elsewhere in
    172.16.0.0/12 that no network holds, instead of failing."""
    assert CLIENT is not None
    runtime = DockerRuntime()
    topo = load_topology(TWO)
    pool = ipaddress.IPv4Network(runtime.choose_subnet(topo))  # a free /24 as the pool
    theirs = CLIENT.networks.create(
        "mxlab-test-whole-pool", labels={"mxlab.test": "1"},
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(pool))]),
    )  # fmt: skip
    try:
        runtime.subnet_pools = (pool, *runtime.subnet_pools[1:])
        subnet = ipaddress.ip_network(runtime.choose_subnet(topo))
        assert subnet.prefixlen == 24 and subnet.subnet_of(ipaddress.IPv4Network("172.16.0.0/12"))
        assert not subnet.overlaps(pool)
        held = [
            ipaddress.ip_network(cfg["Subnet"])
            for net in CLIENT.networks.list()
            for cfg in net.attrs["IPAM"]["Config"] or []
        ]
        assert not any(h.overlaps(subnet) for h in held if h.version == 4), (subnet, held)
    finally:
        theirs.remove()


def test_network_with_an_endpoint_left_is_still_removed() -> None:
    """Under load the engine can hold a removed container's endpoint a while ("has
    active endpoints"); down disconnects what is left instead of failing."""
    assert CLIENT is not None
    from mxlab.lab.runtime.docker import remove_network

    net = CLIENT.networks.create("mxlab-test-endpoint", labels={"mxlab.test": "1"})
    held = CLIENT.containers.run(
        IMAGE, ["python3", "-c", "import time; time.sleep(300)"],
        network="mxlab-test-endpoint", labels={"mxlab.test": "1"}, detach=True,
    )  # fmt: skip
    try:
        remove_network(net)
        assert CLIENT.networks.list(names=["mxlab-test-endpoint"]) == []
    finally:
        held.remove(force=True)


def test_gc_removes_labs_whose_nodes_are_gone_and_spares_live_ones(mxlab_home: Path) -> None:
    assert CLIENT is not None
    mxlab("up", str(TWO), "--runtime", "docker", timeout=1200)
    ours = {"mxlab.home": str(mxlab_home.resolve())}
    live = CLIENT.networks.create("mxlab-live", labels={"mxlab.lab": "live"} | ours)
    keeper = CLIENT.containers.run(
        IMAGE,
        ["python3", "-c", "import time; time.sleep(300)"],
        name="mxlab-live_n1", labels={"mxlab.lab": "live", "mxlab.node": "n1"} | ours,
        detach=True,
    )  # fmt: skip
    # a dead lab of another MXLAB_HOME on the same engine: not ours to remove
    theirs = CLIENT.containers.create(
        IMAGE, ["true"], name="mxlab-theirs_n1",
        labels={"mxlab.lab": "theirs", "mxlab.node": "n1", "mxlab.home": "/elsewhere"},
    )  # fmt: skip
    try:
        for c in _labelled("two-domains")[0]:
            c.kill()  # every node dies; the network and containers stay behind
        proc = mxlab("gc")
        removed = proc.stdout.split(":", 1)[-1].replace(",", " ").split()
        assert "two-domains" in removed and "live" not in removed and "theirs" not in removed
        assert _labelled("two-domains") == ([], [])
        assert len(_labelled("live")[0]) == 1  # a lab with a running node is left alone
        assert len(_labelled("theirs")[0]) == 1  # another user's lab is never touched
        other = mxlab("status", "theirs", check=False)
        assert other.returncode == 2  # nor shown
    finally:
        keeper.remove(force=True)
        theirs.remove(force=True)
        live.remove()


def test_two_labs_coming_up_at_once_both_get_a_subnet(mxlab_home: Path, tmp_path: Path) -> None:
    """Both `up`s pick the same free /24 first; the loser plans again on the next one."""
    import subprocess
    import sys

    paths = []
    for name in ("race-a", "race-b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(TWO.read_text().replace("name: two-domains", f"name: {name}"))
        paths.append(path)
    cmd = [sys.executable, "-c", "from mxlab.cli import main; main()", "up", "-r", "docker"]
    mxlab("image", "build", timeout=1200)  # both ups then race for the network, not the image
    procs = [
        subprocess.Popen([*cmd, str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in paths
    ]
    try:
        outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
        assert [code for code, _ in outcomes] == [0, 0], outcomes
        subnets = {labdir.read_plan(n).subnet for n in ("race-a", "race-b")}
        assert len(subnets) == 2
    finally:
        for name in ("race-a", "race-b"):
            mxlab("down", name, check=False)
    assert _labelled("race-a") == ([], []) and _labelled("race-b") == ([], [])
