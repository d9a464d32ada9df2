"""Ansible over a running docker lab: the inventory reaches every container through
community.docker.docker_api (``ansible -m ping``, a play run inside the relays), and a
playbook adds a user whose mail arrives with no container restarted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mxlab

from .conftest import DOCKER, TOPOLOGIES, needs_docker
from .test_ansible import ansible_env, pings, recap_changed, run
from .test_lab_local import mxlab as mxlab_cli

pytestmark = needs_docker
LAB = "ansible-docker"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("ansible-docker")
    home = tmp / "mxlab-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MXLAB_HOME", str(home))
        mxlab.Lab.up(TOPOLOGIES / "two-domains.yaml", runtime="docker", name=LAB)
        try:
            yield ansible_env(home, tmp)
        finally:
            mxlab.down(LAB)


def _started(lab: mxlab.Lab) -> dict[str, str]:
    """Each container's start time: a restart would change it."""
    assert DOCKER is not None
    return {
        s.node: DOCKER.containers.get(s.detail).attrs["State"]["StartedAt"] for s in lab.status()
    }


def test_inventory_reaches_containers(env: dict[str, str], tmp_path: Path) -> None:
    inv = tmp_path / "lab.ini"
    inv.write_text(mxlab_cli("ansible", "inventory", LAB, "--format", "ini").stdout)
    assert "ansible_connection=community.docker.docker_api" in inv.read_text()
    pings(env, inv, hosts=5)
    play = tmp_path / "inside.yml"  # runs in each relay's container, on its own address
    play.write_text(
        "- hosts: relays\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.wait_for:\n"
        "        host: '{{ mxlab_address }}'\n        port: '{{ mxlab_ports.smtp }}'\n"
        "        search_regex: '^220 {{ mxlab_fqdn }}'\n        timeout: 10\n"
        "    - ansible.builtin.command: hostname\n      register: host\n"
        "    - ansible.builtin.assert:\n"
        "        that: host.stdout == mxlab_fqdn.split('.')[0]\n"
    )
    out = run(env, "ansible-playbook", "-i", str(inv), str(play)).stdout
    assert recap_changed(out) == 2, out  # the command task counts as changed, once a relay


def test_add_user_playbook_on_docker(env: dict[str, str]) -> None:
    lab = mxlab.Lab.attach(LAB)
    before = _started(lab)
    argv = ["ansible-playbook", "mxlab.lab.add_user", "-e", f"mxlab_lab={LAB}"]
    argv += ["-e", "address=erin@beta.test", "-e", "password=erin-secret-1"]
    assert recap_changed(run(env, *argv).stdout) == 1
    assert recap_changed(run(env, *argv).stdout) == 0
    lab = mxlab.Lab.attach(LAB)
    sent = lab.send("alice@alpha.test", ["erin@beta.test"], subject="welcome erin")
    lab.mailbox("erin@beta.test").wait_for(message_id=sent.message_id, timeout=60)
    assert _started(lab) == before
