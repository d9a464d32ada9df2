"""The configs the postfix and dovecot kinds write from the plan, read back by the real
software's own tools where installed; the local refusal; hashes crypt(3) agrees with."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import mxlab
from mxlab.lab import labdir
from mxlab.lab.errors import LabError
from mxlab.lab.kinds.swap import REAL_SOFTWARE, parse_kinds, swap_kinds
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import load_topology
from mxlab.nodes.passwords import hash_password, verify_password
from tests.conftest import TOPOLOGIES


def _postconf(conf: Path) -> dict[str, str]:
    """main.cf as Postfix reads it; any warning (an unknown parameter) fails."""
    if shutil.which("postconf") is None:
        pytest.skip("postfix is not installed")
    run = subprocess.run(["postconf", "-c", str(conf), "-n"], capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    return dict(line.split(" = ", 1) for line in run.stdout.splitlines() if " = " in line)


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_relay_chain_as_postfix_main_cf(runtime: str, tmp_path: Path) -> None:
    """relay-chain with Postfix relays: next hops become relayhost, the chain's trusted
    relays mynetworks, the local domain an LMTP transport to the store, the queue
    policy Postfix's timers; AUTH only after TLS."""
    topo = swap_kinds(load_topology(TOPOLOGIES / "relay-chain.yaml"), REAL_SOFTWARE)
    subnet = "172.30.250.0/24" if runtime == "docker" else None
    plan = make_plan(topo, runtime=runtime, lab_dir=tmp_path / "lab", subnet=subnet)  # type: ignore[arg-type]
    labdir.write_plan(plan)
    nodes = plan.nodes
    main = _postconf(labdir.node_dir(plan, "mx-alpha") / "postfix")
    assert main["relayhost"] == f"[{nodes['out-alpha'].address}]:{nodes['out-alpha'].ports['smtp']}"
    assert main["myhostname"] == "mx.alpha.test" and main["smtpd_tls_auth_only"] == "yes"
    assert main["minimal_backoff_time"] == "2s" and main["maximal_queue_lifetime"] == "300s"
    out = _postconf(labdir.node_dir(plan, "out-alpha") / "postfix")
    assert nodes["mx-alpha"].address in out["mynetworks"].split()
    ndir = labdir.node_dir(plan, "mx-alpha")
    store = nodes["store-alpha"]
    assert (ndir / "postfix" / "transport").read_text() == (
        f"alpha.test lmtp:inet:[{store.address}]:{store.ports['lmtp']}\n"
    )
    assert (
        ndir / "postfix" / "recipients"
    ).read_text() == "alice@alpha.test OK\ncarol@alpha.test OK\n"
    master = (ndir / "postfix" / "master.cf").read_text()
    assert "-o smtpd_tls_security_level=encrypt" in master  # submission: TLS before AUTH
    root = "/mnt" if runtime == "local" else "/mxlab"
    assert main["queue_directory"] == f"{root}/spool"
    assert (ndir / "config.json").stat().st_mode & 0o077 == 0  # the lab's files stay private


def test_send_as_becomes_postfixs_sender_login_map(tmp_path: Path) -> None:
    topo = load_topology(TOPOLOGIES / "two-domains.yaml").model_dump(by_alias=True)
    topo["domains"]["alpha.test"]["send_as"] = {"alice": ["postmaster@alpha.test"]}
    plan = make_plan(
        swap_kinds(mxlab.validate(topo), REAL_SOFTWARE), runtime="local", lab_dir=tmp_path
    )
    labdir.write_plan(plan)
    assert (labdir.node_dir(plan, "mx-alpha") / "postfix" / "senders").read_text() == (
        "alice@alpha.test alice@alpha.test\ncarol@alpha.test carol@alpha.test\n"
        "postmaster@alpha.test alice@alpha.test\n"
    )


def test_dovecot_conf_serves_the_stores_users_with_the_plans_hashes(tmp_path: Path) -> None:
    topo = swap_kinds(load_topology(TOPOLOGIES / "two-domains.yaml"), REAL_SOFTWARE)
    plan = make_plan(topo, runtime="local", lab_dir=tmp_path / "lab")
    labdir.write_plan(plan)
    ndir = labdir.node_dir(plan, "store-beta")
    users = (ndir / "dovecot" / "users").read_text().splitlines()
    assert [u.split(":", 1)[0] for u in users] == ["bob@beta.test", "dave@beta.test"]
    stored = users[0].split(":", 1)[1].removeprefix("{CRYPT}")
    assert verify_password(stored, "bob-secret")
    conf = (ndir / "dovecot" / "dovecot.conf").read_text()
    assert (
        "disable_plaintext_auth = yes" in conf
        and f"listen = {plan.nodes['store-beta'].address}" in conf
    )
    assert (ndir / "dovecot" / "users").stat().st_mode & 0o077 == 0


def test_hashes_are_crypt3s_scrypt() -> None:
    """What Dovecot's {CRYPT} computes (libxcrypt's crypt) is the stored hash."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        pytest.skip("no libcrypt")
    crypt = ctypes.CDLL(name).crypt
    crypt.restype, crypt.argtypes = ctypes.c_char_p, [ctypes.c_char_p, ctypes.c_char_p]
    for password in ["pw", "alice-secret", "ünïcode and spaces " * 4]:
        stored = hash_password(password)
        assert crypt(password.encode(), stored.encode()).decode() == stored
        assert verify_password(stored, password) and not verify_password(stored, password + "x")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("postfix"), reason="needs root, postfix")
def test_local_postfix_needs_the_lab_dns_on_port_53(mxlab_home: Path) -> None:
    """Postfix asks DNS through the C library, on port 53 only: refused in one line."""
    topo = load_topology(TOPOLOGIES / "mixed.yaml").model_dump()
    topo["settings"]["ports"] = {"dns": 5353}
    with pytest.raises(LabError, match=r"node mx-beta \(kind postfix\): .*port 53") as err:
        mxlab.Lab.up(topo, "local")
    assert "\n" not in str(err.value)
    assert not mxlab.labs()


def test_kinds_swap_within_a_role_only() -> None:
    assert parse_kinds("relay=postfix,store=dovecot") == REAL_SOFTWARE == parse_kinds("real")
    with pytest.raises(LabError, match="swap kinds of one role"):
        parse_kinds("relay=dovecot")
    with pytest.raises(LabError, match="no kind 'exim'"):
        parse_kinds("relay=exim")
