"""The hosts runtime over SSH: three "hosts" are containers of the Debian base plus
openssh-server, reached with a key made here; a two-domain lab spread over them is
checked, a node killed and started, and `down` leaves the hosts clean."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mxlab.lab import labdir

from .conftest import DOCKER, TOPOLOGIES, needs_docker, wait_for
from .test_lab_local import mxlab

pytest.importorskip("ansible", reason="the hosts runtime needs mxlab[ansible]")
pytestmark = needs_docker

TWO = TOPOLOGIES / "two-domains.yaml"
LAB = "two-domains"
HOSTS = 3
LABEL = {"mxlab.test": "hosts"}
SSHD = (  # the generated key, host keys, and sshd in the foreground
    "mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh && "
    'printf "%s\\n" "$KEY" > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys'
    " && ssh-keygen -A && exec /usr/sbin/sshd -D -e"
)


def _free_network():  # noqa: ANN202 - a docker Network on a /23 no other network overlaps
    import docker.errors
    from docker.types import IPAMConfig, IPAMPool

    assert DOCKER is not None
    for third in range(0, 256, 2):
        net = ipaddress.ip_network(f"10.214.{third}.0/23")
        gateway = str(next(net.hosts()))
        try:
            return DOCKER.networks.create(
                f"mxlab-hosts-test-{third}", labels=LABEL,
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(net), gateway=gateway)]),
            )  # fmt: skip
        except docker.errors.APIError:
            continue  # overlaps: try the next
    raise AssertionError("no free /23 in 10.214.0.0/16")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three SSH hosts on a /23: the lab takes the lower /24 (mxlab_subnet), the hosts
    sit in the upper one; this machine is on the bridge, so it reaches the nodes."""
    from docker.types import EndpointConfig

    from mxlab.lab.image import packages_image

    assert DOCKER is not None
    folder = tmp_path_factory.mktemp("hosts")
    key = Ed25519PrivateKey.generate()
    private = folder / "id_ed25519"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    image = packages_image(DOCKER, ["openssh-server"])
    net = _free_network()
    wide = ipaddress.ip_network(net.attrs["IPAM"]["Config"][0]["Subnet"])
    lab, upper = wide.subnets(new_prefix=24)
    containers, hosts = [], {}
    try:
        for i in range(HOSTS):
            address = str(upper.network_address + 10 + i)
            c = DOCKER.containers.create(
                image, ["sh", "-c", SSHD], name=f"{net.name}-host{i}", hostname=f"host{i}",
                environment={"KEY": public.decode()}, labels=LABEL, cap_add=["NET_ADMIN"],
                init=True, network=net.name, detach=True,
                networking_config={net.name: EndpointConfig("1.41", ipv4_address=address)},
            )  # fmt: skip
            containers.append(c)
            c.start()
            hosts[f"host{i}"] = {"ansible_host": address}
        for spec in hosts.values():
            wait_for(lambda a=spec["ansible_host"]: _ssh_open(a), 30, "sshd")
        doc = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(private),
                    "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                    "-o UserKnownHostsFile=/dev/null",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "mxlab_subnet": str(lab),
                },
                "children": {"mxlab": {"hosts": hosts}},
            }
        }
        path = folder / "inventory.yml"
        path.write_text(yaml.safe_dump(doc))
        yield path
    finally:
        for c in containers:
            c.remove(force=True)
        net.remove()


def _ssh_open(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _hosts_state(inventory: Path) -> list[str]:
    """What the lab left on each host: its folder, lab addresses, node processes."""
    assert DOCKER is not None
    left = []
    hosts = yaml.safe_load(inventory.read_text())["all"]["children"]["mxlab"]["hosts"]
    subnet = yaml.safe_load(inventory.read_text())["all"]["vars"]["mxlab_subnet"]
    prefix = subnet.rsplit(".", 1)[0] + "."
    for c in DOCKER.containers.list(filters={"label": "mxlab.test=hosts"}):
        if c.attrs["Config"]["Hostname"] not in hosts:
            continue
        checks = {
            "folder": ["test", "-e", f"/var/lib/mxlab/{LAB}"],
            "address": ["sh", "-c", f"ip -o -4 addr | grep -q ' {prefix}'"],
            "process": ["pgrep", "-f", "mxlab.nodes"],
        }
        left += [f"{c.name}: {what}" for what, argv in checks.items() if c.exec_run(argv)[0] == 0]
    return left


def _states() -> dict[str, str]:
    return {n["node"]: n["state"] for n in json.loads(mxlab("status", "--json").stdout)["nodes"]}


@pytest.mark.usefixtures("mxlab_home")
def test_two_domains_over_three_ssh_hosts(inventory: Path) -> None:
    started = time.monotonic()
    mxlab("up", str(TWO), "--runtime", "hosts", "--inventory", str(inventory), timeout=900)
    try:
        plan = labdir.read_plan(LAB)
        assert plan.runtime == "hosts"
        placed = json.loads((labdir.lab_dir(LAB) / "hosts.json").read_text())["placed"]
        assert sorted(set(placed.values())) == ["host0", "host1", "host2"]  # spread
        assert set(_states().values()) == {"running"}
        check = mxlab("check", "--json", check=False, timeout=300)
        report = json.loads(check.stdout)
        assert report["failed"] == 0 and report["passed"] > 0, check.stdout

        mxlab("kill", "mx-beta")
        assert _states()["mx-beta"] == "stopped"
        mxlab("start", "mx-beta")
        sent = json.loads(
            mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test", "--json").stdout
        )
        assert sent["failed"] == 0 and sent["passed"] == 1, sent
        assert '"node": "mx-alpha"' in mxlab("logs", "mx-alpha").stdout  # its log, from its host
    finally:
        mxlab("down", LAB, timeout=300)
    assert _hosts_state(inventory) == []
    print(f"hosts runtime: up, check, kill/start, down in {time.monotonic() - started:.0f}s")


def test_placement_over_inventory_hosts(tmp_path: Path) -> None:
    """Round-robin over the group mxlab; a placement names a host, a group or a host
    variable as key=value; one naming nothing is one line."""
    from mxlab.lab.errors import LabError
    from mxlab.lab.plan import make_plan
    from mxlab.lab.runtime.hosts import HostsRuntime
    from mxlab.lab.topology import load_topology

    topo = load_topology(TWO)
    topo.nodes["ns"].placement = "h3"
    topo.nodes["store-beta"].placement = "rack=b"
    topo.nodes["mx-beta"].placement = "edge"
    plan = make_plan(topo, runtime="hosts", lab_dir=tmp_path, subnet="10.214.0.0/24")
    rt = HostsRuntime(tmp_path / "inventory.yml")
    rt._hostvars = {"h1": {}, "h2": {"rack": "b"}, "h3": {}, "spare": {}}
    rt._groups = {"mxlab": ["h1", "h2", "h3"], "edge": ["h1"]}
    placed = rt.place(plan)
    assert placed["ns"] == "h3" and placed["store-beta"] == "h2" and placed["mx-beta"] == "h1"
    assert "spare" not in placed.values()  # outside the group mxlab
    topo.nodes["ns"].placement = "nowhere"
    plan = make_plan(topo, runtime="hosts", lab_dir=tmp_path, subnet="10.214.0.0/24")
    with pytest.raises(LabError, match="node ns: placement 'nowhere' matches no host"):
        rt.place(plan)


def test_hosts_run_our_nodes_only_and_skip_external(tmp_path: Path) -> None:
    """The hosts get the node wheel: Postfix or Dovecot nodes are refused in one line,
    an external node is placed nowhere."""
    import yaml

    from mxlab.lab.errors import LabError
    from mxlab.lab.plan import make_plan
    from mxlab.lab.runtime.hosts import HostsRuntime
    from mxlab.lab.topology import load_topology, parse_topology

    from .test_external_sink import topology

    rt = HostsRuntime(tmp_path / "inventory.yml")
    rt._hostvars = {"h1": {}, "h2": {}}
    rt._groups = {}
    mixed = load_topology(TOPOLOGIES / "mixed.yaml")
    plan = make_plan(mixed, runtime="hosts", lab_dir=tmp_path, subnet="10.214.0.0/24")
    with pytest.raises(LabError, match="own nodes only, not dovecot, postfix"):
        rt.place(plan)
    sinks = parse_topology(yaml.safe_dump(topology(2525)), "t.yaml")
    plan = make_plan(sinks, runtime="hosts", lab_dir=tmp_path, subnet="10.214.0.0/24")
    placed = rt.place(plan)
    assert "hostsink" not in placed and "catch" in placed
