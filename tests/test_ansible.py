"""Ansible over a running local lab: the inventory drives ``ansible -m ping`` and
``ansible-playbook``; each module of the mxlab.lab collection is idempotent (the second
run changes nothing) and honours check mode; the shipped playbooks report changed, then
ok; a user added by a playbook receives mail with no node restarted."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mxlab
from mxlab.api import preview
from mxlab.lab.inventory import domain_group, inventory, render_ini

from .conftest import TOPOLOGIES, wait_for
from .test_lab_local import mxlab as mxlab_cli

BIN = Path(sys.executable).parent  # ansible, ansible-playbook beside this Python
LAB = "ansible-local"


def ansible_env(home: Path, tmp: Path) -> dict[str, str]:
    """The lab's home, the collection where `mxlab ansible path` says, quiet output."""
    path = mxlab_cli("ansible", "path").stdout.strip()
    return dict(
        os.environ,
        MXLAB_HOME=str(home),
        ANSIBLE_COLLECTIONS_PATH=path,
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def run(env: dict[str, str], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def recap_changed(output: str) -> int:
    """The sum of changed= over the hosts in a playbook's PLAY RECAP."""
    counts = re.findall(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)", output, re.M)
    assert counts, output
    return sum(map(int, counts))


def pings(env: dict[str, str], inventory_file: Path, hosts: int) -> None:
    """``ansible -m ping`` reaches every node through the connection its entry names."""
    proc = run(env, "ansible", "-i", str(inventory_file), "all", "-m", "ping")
    assert proc.stdout.count('"ping": "pong"') == hosts, proc.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One local lab for the module: backup-mx (alpha.test; beta.test with a backup MX)."""
    tmp = tmp_path_factory.mktemp("ansible")
    home = tmp / "mxlab-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MXLAB_HOME", str(home))
        mxlab.Lab.up(TOPOLOGIES / "backup-mx.yaml", runtime="local", name=LAB)
        try:
            yield ansible_env(home, tmp) | {"MXLAB_TEST_TMP": str(tmp)}
        finally:
            mxlab.down(LAB)


@pytest.fixture
def lab(env: dict[str, str]) -> mxlab.Lab:
    return mxlab.Lab.attach(LAB)


def module(env: dict[str, str], name: str, args: dict[str, Any], check: bool = False) -> dict:
    """One task of ``mxlab.lab.<name>`` on localhost (ad hoc), its result as JSON."""
    argv = ["ansible", "localhost", "-m", f"mxlab.lab.{name}", "-a", json.dumps(args)]
    proc = run(
        env | {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"},
        *argv,
        *(["--check", "--diff"] if check else ["--diff"]),
    )
    result: dict = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def test_inventory_shape_from_the_plan() -> None:
    plan = preview(TOPOLOGIES / "backup-mx.yaml")
    inv = inventory(plan)["all"]
    groups = inv["children"]
    assert list(groups["dns"]["hosts"]) == ["ns"]
    assert sorted(groups["relays"]["hosts"]) == ["mx-alpha", "mx1-beta", "mx2-beta"]
    assert sorted(groups["stores"]["hosts"]) == ["store-alpha", "store-beta"]
    assert sorted(groups["domain_beta_test"]["hosts"]) == [
        "mx1-beta",
        "mx2-beta",
        "ns",
        "store-beta",
    ]
    assert groups["domain_beta_test"]["vars"] == {"mxlab_domain": "beta.test"}
    mx2 = inv["hosts"]["mx2-beta"]
    assert mx2["ansible_connection"] == "local"
    assert mx2["mxlab_fqdn"] == "mx2.beta.test" and mx2["mxlab_role"] == "relay"
    assert mx2["mxlab_address"] == plan.nodes["mx2-beta"].address
    assert mx2["mxlab_ports"]["smtp"] == plan.nodes["mx2-beta"].ports["smtp"]
    assert mx2["mxlab_domains"] == ["beta.test"]
    assert domain_group("Mail-1.Example.TEST") == "domain_mail_1_example_test"


def test_external_nodes_get_only_their_address() -> None:
    """mxlab does not run an external node: no docker or local connection for it."""
    import yaml

    from mxlab.lab.topology import parse_topology

    from .test_external_sink import topology

    plan = preview(parse_topology(yaml.safe_dump(topology(2525)), "t.yaml"))
    hosts = inventory(plan)["all"]["hosts"]
    assert hosts["hostsink"]["ansible_host"] == plan.nodes["hostsink"].address
    assert "ansible_connection" not in hosts["hostsink"]
    assert hosts["catch"]["ansible_connection"] == "local"


def test_ini_and_yaml_inventories_agree(env: dict[str, str], tmp_path: Path) -> None:
    """Ansible reads both formats into the same hosts, groups and typed variables."""
    listed = []
    for fmt in ("yaml", "ini"):
        path = tmp_path / f"lab.{fmt}"
        path.write_text(mxlab_cli("ansible", "inventory", LAB, "--format", fmt).stdout)
        out = run(env, "ansible-inventory", "-i", str(path), "--list").stdout
        listed.append(json.loads(out))
    assert listed[0] == listed[1]
    hostvars = listed[0]["_meta"]["hostvars"]
    assert hostvars["store-beta"]["mxlab_ports"]["imap"] > 0
    assert hostvars["ns"]["mxlab_domains"] == ["alpha.test", "beta.test"]


def test_inventory_drives_ping_and_playbook(env: dict[str, str], tmp_path: Path) -> None:
    """Every node answers ping through its connection; a play over the relays group uses
    each node's address and port variables to reach its SMTP service."""
    inv = tmp_path / "lab.yml"
    inv.write_text(mxlab_cli("ansible", "inventory", LAB).stdout)
    pings(env, inv, hosts=6)
    play = tmp_path / "smtp.yml"
    play.write_text(
        "- hosts: relays\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.wait_for:\n"
        "        host: '{{ mxlab_address }}'\n        port: '{{ mxlab_ports.smtp }}'\n"
        "        search_regex: '^220 {{ mxlab_fqdn }}'\n        timeout: 10\n"
    )
    out = run(env, "ansible-playbook", "-i", str(inv), str(play)).stdout
    assert re.search(r"mx2-beta\s+:\s+ok=1\b.*failed=0", out), out


def _pids(lab: mxlab.Lab) -> dict[str, str]:
    return {s.node: s.detail for s in lab.status()}


def test_add_user_playbook_then_mail_without_restart(env: dict[str, str], lab: mxlab.Lab) -> None:
    before = _pids(lab)
    argv = ["ansible-playbook", "mxlab.lab.add_user", "-e", f"mxlab_lab={LAB}"]
    argv += ["-e", "address=erin@alpha.test", "-e", "password=erin-secret-1"]
    assert recap_changed(run(env, *argv).stdout) == 1
    assert recap_changed(run(env, *argv).stdout) == 0
    lab = mxlab.Lab.attach(LAB)
    sent = lab.send("bob@beta.test", ["erin@alpha.test"], subject="welcome erin")
    got = lab.mailbox("erin@alpha.test").wait_for(message_id=sent.message_id, timeout=30)
    assert str(got["Subject"]) == "welcome erin"
    sent = lab.send("erin@alpha.test", ["bob@beta.test"], subject="thanks")  # submission AUTH
    lab.mailbox("bob@beta.test").wait_for(message_id=sent.message_id, timeout=30)
    assert _pids(lab) == before  # relays and stores reloaded; none restarted
    secrets = Path(lab.directory) / "secrets.json"
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert "erin-secret-1" in secrets.read_text()
    assert "erin-secret-1" not in (Path(lab.directory) / "topology.json").read_text()
    assert "erin-secret-1" not in (Path(lab.directory) / "plan.json").read_text()


def test_dns_changes_reload_without_restart(lab: mxlab.Lab) -> None:
    """Records and MX changes reach the DNS node by SIGHUP, as NSD's reload: no restart."""
    dns = lab.plan.dns_node.name
    before = _pids(lab)[dns]
    lab.dns_add("www.alpha.test", "A", "192.0.2.7")
    assert lab.dns("www.alpha.test", "A") == ("NOERROR", ["192.0.2.7"])
    lab.dns_remove("www.alpha.test", "A")
    assert lab.dns("www.alpha.test", "A")[0] == "NXDOMAIN"
    assert _pids(lab)[dns] == before


Probe = Callable[[mxlab.Lab], Any]


def _users(lab: mxlab.Lab) -> list[str]:
    return sorted(u.address for u in lab.users)


def _state(node: str) -> Probe:
    return lambda lab: next(s.state for s in lab.status() if s.node == node)


CASES: list[tuple[str, dict[str, Any], Probe]] = [
    ("mxlab_user", {"address": "frank@beta.test", "password": "frank-secret-1"}, _users),
    (
        "mxlab_user",
        {"address": "frank@beta.test", "password": "frank-secret-2"},
        lambda lab: lab.user("frank@beta.test").password,
    ),
    ("mxlab_user", {"address": "frank@beta.test", "state": "absent"}, _users),
    (
        "mxlab_domain",
        {
            "domain": "gamma.test",
            "store": "store-beta",
            "mx": {"mx1-beta": 10, "mx-alpha": 20},
            "users": {"gus": "gus-secret-1"},
        },
        lambda lab: lab.dns("gamma.test", "MX"),
    ),
    (
        "mxlab_mx",
        {"domain": "gamma.test", "node": "mx2-beta", "preference": 30},
        lambda lab: lab.dns("gamma.test", "MX"),
    ),
    (
        "mxlab_mx",
        {"domain": "gamma.test", "mx": {"mx1-beta": 5, "mx-alpha": 20}},
        lambda lab: lab.dns("gamma.test", "MX"),
    ),
    (
        "mxlab_dns_fault",
        {"name": "beta.test", "mode": "servfail"},
        lambda lab: lab.dns("beta.test", "MX")[0],
    ),
    ("mxlab_dns_fault", {"name": "beta.test", "state": "absent"}, lambda lab: lab.dns_faults()),
    ("mxlab_node", {"node": "mx2-beta", "state": "stopped"}, _state("mx2-beta")),
    ("mxlab_node", {"node": "mx2-beta", "state": "started"}, _state("mx2-beta")),
]


@pytest.mark.parametrize(("name", "args", "probe"), CASES, ids=[c[0] for c in CASES])
def test_module_check_mode_then_idempotent(
    env: dict[str, str], name: str, args: dict[str, Any], probe: Probe
) -> None:
    """Check mode says "changed" and changes nothing; the real run changes what the
    probe sees; the second run changes nothing. The cases build on each other."""
    args = {"lab": LAB, **args}
    before = probe(mxlab.Lab.attach(LAB))
    dry = module(env, name, args, check=True)
    assert dry["changed"] is True and "diff" in dry, dry
    assert probe(mxlab.Lab.attach(LAB)) == before
    assert module(env, name, args)["changed"] is True
    assert probe(mxlab.Lab.attach(LAB)) != before
    again = module(env, name, args)
    assert again["changed"] is False, again


def test_records_added_by_hand_survive_a_change(lab: mxlab.Lab) -> None:
    """A record a student added to the running lab stays when a change re-plans the
    zones (the DNS node restarts with the MX change)."""
    lab.dns_add("hand.alpha.test", "TXT", '"kept"')
    lab.set_mx("gamma.test", {"mx1-beta": 5, "mx-alpha": 40})
    assert lab.dns("hand.alpha.test", "TXT") == ("NOERROR", ['"kept"'])
    assert lab.dns("gamma.test", "MX")[1] == ["40 mx.alpha.test.", "5 mx1.beta.test."]


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGHUP: a config that loads is applied and acknowledged by its digest; one that
    does not is reported and the node keeps what it has."""
    from dataclasses import replace

    from mxlab.nodes.reload import APPLIED_FILE, digest, on_sighup

    store = preview(TOPOLOGIES / "two-domains.yaml").nodes["store-alpha"].config
    config = replace(store, state_dir=str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    path, applied_file = tmp_path / "config.json", tmp_path / "state" / APPLIED_FILE
    applied: list[Any] = []

    async def hup_until(done: Callable[[], bool]) -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = asyncio.get_running_loop().time() + 5
        while not done():
            assert asyncio.get_running_loop().time() < deadline, "the SIGHUP went unanswered"
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        on_sighup(config, applied.append)
        try:
            text = config.model_dump_json()
            path.write_text(text)
            await hup_until(lambda: bool(applied))
            assert applied == [config]
            assert applied_file.read_text().strip() == digest(text.encode())
            path.write_text("{not json")
            await hup_until(lambda: "reload_error" in capsys.readouterr().out)
            assert applied == [config]
            assert applied_file.read_text().strip() == digest(text.encode())
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    asyncio.run(scenario())


def test_cert_module_renews_an_expired_certificate(env: dict[str, str], lab: mxlab.Lab) -> None:
    lab.cert_renew("mx-alpha", expired=True)
    assert lab.cert_check("mx-alpha")[0] is False
    args = {"lab": LAB, "node": "mx-alpha"}
    assert module(env, "mxlab_cert", args, check=True)["changed"] is True
    assert lab.cert_check("mx-alpha")[0] is False
    assert module(env, "mxlab_cert", args)["changed"] is True
    assert lab.cert_check("mx-alpha")[0] is True
    assert module(env, "mxlab_cert", args)["changed"] is False


def test_module_errors_are_one_line(env: dict[str, str]) -> None:
    argv = ["ansible", "localhost", "-m", "mxlab.lab.mxlab_mx"]
    argv += ["-a", json.dumps({"lab": LAB, "domain": "beta.test", "node": "mx9", "preference": 5})]
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no node named 'mx9'" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout


PLAYBOOKS = [
    (
        "onboard_domain",
        ["-e", "domain=delta.test", "-e", "store=store-alpha", "-e", "primary=mx-alpha"]
        + ["-e", "backup=mx2-beta", "-e", json.dumps({"users": {"dora": "dora-secret"}})],
    ),
    ("rotate_certs", ["--limit", "stores"]),  # serial: one node at a time; two suffice
    ("replace_relay", ["-e", "domain=beta.test", "-e", "old=mx2-beta", "-e", "new=mx-alpha"]),
]


@pytest.mark.parametrize(("playbook", "extra"), PLAYBOOKS, ids=[p[0] for p in PLAYBOOKS])
def test_shipped_playbook_changed_then_ok(
    env: dict[str, str], lab: mxlab.Lab, tmp_path: Path, playbook: str, extra: list[str]
) -> None:
    inv = tmp_path / "lab.yml"
    inv.write_text(mxlab_cli("ansible", "inventory", LAB).stdout)
    if playbook == "rotate_certs":
        lab.cert_renew("store-beta", expired=True)  # a certificate due for rotation
    argv = ["ansible-playbook", "-i", str(inv), f"mxlab.lab.{playbook}", *extra]
    assert recap_changed(run(env, *argv).stdout) > 0
    assert recap_changed(run(env, *argv).stdout) == 0
    lab = mxlab.Lab.attach(LAB)
    if playbook == "onboard_domain":
        assert lab.dns("delta.test", "MX")[1] == ["10 mx.alpha.test.", "20 mx2.beta.test."]
        sent = lab.send("bob@beta.test", ["dora@delta.test"], subject="hello dora")
        lab.mailbox("dora@delta.test").wait_for(message_id=sent.message_id, timeout=30)
    elif playbook == "rotate_certs":
        assert lab.cert_check("store-beta")[0] is True
    else:
        assert lab.dns("beta.test", "MX")[1] == ["10 mx1.beta.test.", "20 mx.alpha.test."]
        assert _state("mx2-beta")(lab) != "running"
        sent = lab.send("alice@alpha.test", ["bob@beta.test"], subject="after the swap")
        lab.mailbox("bob@beta.test").wait_for(message_id=sent.message_id, timeout=30)


def test_queue_module_drains_a_relay(env: dict[str, str], lab: mxlab.Lab) -> None:
    """A message left at mx1-beta while beta's store was down (its next retry minutes
    away: the queue policy changed live): check mode leaves it queued; the run
    flushes it and waits until the queue is empty; the next run has nothing to do."""

    def retry(seconds: float) -> Callable[[dict], dict]:
        def edit(topology: dict) -> dict:
            topology["settings"]["queue"] |= {"retry_initial": seconds, "retry_max": seconds}
            return topology

        return edit

    assert "mx1-beta" in lab.reconfigure(retry(200.0))
    lab.stop("store-beta")
    try:
        sent = lab.send("alice@alpha.test", ["bob@beta.test"], subject="held")
        wait_for(lambda: lab.queue("mx1-beta"), timeout=30, what="a message queued at mx1-beta")
        args = {"lab": LAB, "node": "mx1-beta"}
        assert module(env, "mxlab_queue", args, check=True)["changed"] is True
        assert lab.queue("mx1-beta")
    finally:
        lab.start("store-beta")
    assert module(env, "mxlab_queue", args)["drained"] == 1
    assert lab.queue("mx1-beta") == []
    lab.mailbox("bob@beta.test").wait_for(message_id=sent.message_id, timeout=30)
    assert module(env, "mxlab_queue", args)["changed"] is False
    lab.reconfigure(retry(2.0))


def test_inventory_format_error_is_one_line() -> None:
    proc = mxlab_cli("ansible", "inventory", LAB, "--format", "xml", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --format xml: use yaml or ini"


def test_render_ini_quotes_values() -> None:
    text = render_ini(inventory(preview(TOPOLOGIES / "two-domains.yaml")))
    assert "[domain_alpha_test]" in text and "[relays]" in text
    assert 'mxlab_ports=\'{"dns":' in text
