"""End to end on the local runtime: the README's lab, real clients, faults, teardown."""

from __future__ import annotations

import imaplib
import ipaddress
import json
import os
import poplib
import shutil
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.api import Lab
from mxlab.lab import labdir
from mxlab.lab.checks import split_trace
from mxlab.lab.mail import build_message, submit, tls_context
from mxlab.lab.plan import LabPlan, default_local_subnet

from .conftest import TOPOLOGIES

TWO = TOPOLOGIES / "two-domains.yaml"


def mxlab(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", "from mxlab.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mxlab {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


def _listening(subnet: str) -> list[str]:
    """Sockets bound in the lab's subnet, from /proc (TCP LISTEN and any UDP)."""
    net = ipaddress.ip_network(subnet)
    found = []
    for table, want_state in (("tcp", "0A"), ("udp", None)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            hexaddr, hexport = fields[1].split(":")
            addr = ipaddress.ip_address(bytes(reversed(bytes.fromhex(hexaddr))))
            if addr in net and (want_state is None or fields[3] == want_state):
                found.append(f"{table} {addr}:{int(hexport, 16)}")
    return found


def _lab_processes(lab_dir: str) -> list[str]:
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cwd.startswith(lab_dir) and b"mxlab.nodes" in cmd:
            procs.append(pid)
    return procs


@pytest.fixture
def lab(mxlab_home: Path) -> Iterator[LabPlan]:
    mxlab("up", str(TWO), "--runtime", "local")
    plan = labdir.read_plan("two-domains")
    try:
        yield plan
    finally:
        mxlab("down", "two-domains", check=False)


def test_readme_run_delivers_every_pair(mxlab_home: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    proc = mxlab("run", str(TWO), "--runtime", "local", "--json", "--junit", str(junit))
    report = json.loads(proc.stdout)
    assert report["failed"] == 0 and report["passed"] == 12  # 4 users, ordered pairs
    for r in report["results"]:
        assert r["imap"] and r["pop3"] and r["bytes_equal"] and r["route_ok"], r
        cross = r["sender"].split("@")[1] != r["rcpt"].split("@")[1]
        assert len(r["hops"]) == (3 if cross else 2), r
    assert 'failures="0"' in junit.read_text() and 'tests="12"' in junit.read_text()
    # run tears the lab down behind itself: no socket, no process, no directory
    assert _listening(default_local_subnet(str(labdir.lab_dir("two-domains")))) == []
    assert not labdir.lab_dir("two-domains").exists()


def test_table_output_and_down_leaves_nothing(mxlab_home: Path) -> None:
    proc = mxlab("run", str(TWO), "--runtime", "local", "--keep")
    assert "12 passed, 0 failed" in proc.stdout
    for col in ("from", "to", "by", "ms", "hops"):
        assert col in proc.stdout
    plan = labdir.read_plan("two-domains")
    assert len(_listening(plan.subnet)) >= 12  # every service of every node
    assert len(_lab_processes(plan.lab_dir)) == 5
    mxlab("down")
    assert _listening(plan.subnet) == []
    assert _lab_processes(plan.lab_dir) == []
    assert not Path(plan.lab_dir).exists()  # mail, queues, keys: nothing remains
    status = mxlab("status", check=False)
    assert status.returncode == 2 and "no lab is up" in status.stderr


def test_relays_with_delivery_processes_deliver_and_leave_nothing(
    mxlab_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "two-domains.yaml"
    path.write_text(TWO.read_text() + "settings:\n  queue: {delivery_process: true}\n")
    proc = mxlab("run", str(path), "--runtime", "local", "--keep")
    assert "12 passed, 0 failed" in proc.stdout
    plan = labdir.read_plan("two-domains")
    assert len(_lab_processes(plan.lab_dir)) == 7  # each relay with its delivery process
    mxlab("down")
    assert _lab_processes(plan.lab_dir) == []


def test_up_twice_refuses(lab: LabPlan) -> None:
    proc = mxlab("up", str(TWO), "--runtime", "local", check=False)
    assert proc.returncode == 2
    assert "already running" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_stdlib_clients_work_against_the_lab(lab: LabPlan) -> None:
    mx = lab.nodes["mx-alpha"]
    alice = lab.user("alice@alpha.test")
    msg = build_message(alice.address, ["bob@beta.test"], "stdlib", "hello bob\n")
    with smtplib.SMTP(mx.address, mx.ports["submission"], timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=tls_context(lab))
        smtp.ehlo("client.test")
        assert smtp.has_extn("auth")
        smtp.login(alice.address, alice.password)
        refused = smtp.send_message(msg)
        assert refused == {}
    store = lab.nodes["store-beta"]
    bob = lab.user("bob@beta.test")
    deadline = time.monotonic() + 30
    with imaplib.IMAP4(store.address, store.ports["imap"], timeout=10) as imap:
        imap.starttls(ssl_context=tls_context(lab))
        imap.login(bob.address, bob.password)
        while True:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", "stdlib")
            if data[0] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert data[0], "message not delivered by IMAP"
        _, parts = imap.fetch(data[0].split()[0], "(BODY[])")
        hops, body = split_trace(parts[0][1])
        assert hops == ["mx-alpha.alpha.test", "mx-beta.beta.test", "store-beta.beta.test"]
        assert body == msg.as_bytes()
    pop = poplib.POP3(store.address, store.ports["pop3"], timeout=10)
    pop.stls(context=tls_context(lab))
    pop.user(bob.address)
    pop.pass_(bob.password)
    count, _ = pop.stat()
    assert count == 1
    _, lines, _ = pop.retr(1)
    assert b"hello bob" in b"\r\n".join(lines)
    pop.quit()


def test_no_open_relay_and_unknown_user(lab: LabPlan) -> None:
    mx = lab.nodes["mx-beta"]
    with smtplib.SMTP(mx.address, mx.ports["smtp"], timeout=10) as smtp:
        smtp.ehlo("stranger.test")
        smtp.mail("someone@elsewhere.test")
        code, _ = smtp.rcpt("victim@alpha.test")  # foreign domain, no auth
        assert code >= 500
        code, _ = smtp.rcpt("nobody@beta.test")
        assert code == 550
        code, _ = smtp.rcpt("bob@beta.test")
        assert code == 250


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_submits_with_auth(lab: LabPlan) -> None:
    mx = lab.nodes["mx-beta"]
    dave = lab.user("dave@beta.test")
    proc = subprocess.run(
        ["swaks", "--server", mx.address, "--port", str(mx.ports["submission"]),
         "--from", dave.address, "--to", "carol@alpha.test",
         "--tls", "--auth", "PLAIN", "--auth-user", dave.address, "--auth-password", dave.password,
         "--header", "Subject: via swaks"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "250" in proc.stdout
    bad = subprocess.run(
        ["swaks", "--server", mx.address, "--port", str(mx.ports["submission"]),
         "--from", dave.address, "--to", "carol@alpha.test",
         "--tls", "--auth", "PLAIN", "--auth-user", dave.address, "--auth-password", "wrong"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode != 0 and "535" in bad.stdout


def test_killed_relay_delivers_what_it_acknowledged(lab: LabPlan) -> None:
    """Stop the destination MX, submit (250 = queued on disk), SIGKILL the sending relay,
    bring both back: the message arrives exactly once."""
    mxlab("stop", lab.lab, "mx-beta")
    msg = build_message("alice@alpha.test", ["dave@beta.test"], "survives kill", "x\n")
    sent = submit(lab, msg)
    queue = Path(lab.lab_dir) / "nodes" / "mx-alpha" / "state" / "queue"
    assert any(p.is_file() for p in queue.rglob("*")), "acknowledged mail is not on disk"
    mxlab("kill", lab.lab, "mx-alpha")
    mxlab("start", lab.lab, "mx-beta")
    mxlab("start", "mx-alpha")  # the only lab up: its name may be left out
    store = lab.nodes["store-beta"]
    dave = lab.user("dave@beta.test")
    deadline = time.monotonic() + 60
    found: list[bytes] = []
    while time.monotonic() < deadline:
        with imaplib.IMAP4(store.address, store.ports["imap"], timeout=10) as imap:
            imap.starttls(ssl_context=tls_context(lab))
            imap.login(dave.address, dave.password)
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "HEADER", "Message-ID", msg["Message-ID"])
            if data[0]:
                for num in data[0].split():
                    _, parts = imap.fetch(num, "(BODY.PEEK[])")
                    found.append(parts[0][1])
                break
        time.sleep(0.2)
    assert len(found) == 1, f"delivered {len(found)} times"
    assert split_trace(found[0])[1] == sent


def test_declared_checks_run_after_the_pairs_and_fail_the_run(
    mxlab_home: Path, tmp_path: Path
) -> None:
    good = TWO.read_text()
    text = good.replace('["10 mx-beta.beta.test."]', '["10 mx9.beta.test."]')
    assert text != good
    path = tmp_path / "two-domains.yaml"
    path.write_text(text)
    junit = tmp_path / "junit.xml"
    proc = mxlab("run", str(path), "--runtime", "local", "--json", "--junit", str(junit),
                 check=False)  # fmt: skip
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["failed"] == 0 and report["passed"] == 12  # every pair still delivered
    step = report["checks"]["steps"][0]
    assert not step["ok"] and "expected NOERROR ['10 mx9.beta.test.']" in step["detail"]
    assert len(report["checks"]["steps"]) == 1  # a failed check stops the list
    xml = junit.read_text()
    assert "<testsuites>" in xml and xml.count("<testsuite ") == 2


def test_trace_follows_a_message_from_submission_to_mailbox(lab: LabPlan) -> None:
    sent = mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test").stdout
    message_id = sent.split()[1]  # "submitted <id> (N bytes) ..."
    proc = mxlab("trace", message_id)
    assert "path: mx-alpha > mx-beta > store-beta" in proc.stdout, proc.stdout
    missing = mxlab("trace", "<nobody@nowhere.test>", check=False)
    assert missing.returncode == 2 and "no node of lab" in missing.stderr


def test_a_relay_asked_for_its_queue_while_it_starts_comes_up(lab: LabPlan) -> None:
    """The dashboard asks every running relay's queue each second, and a node counts as
    running from its first instant: the request's SIGUSR1 must wait for the starting
    relay's handler, not end it (signal(7): its default action; mxlab.nodes.host_signals)."""
    the_lab = Lab.attach(lab.lab)
    the_lab.kill("mx-beta")
    done = threading.Event()
    answered: list[int] = []

    def ask_again_and_again() -> None:
        while not done.is_set():
            answered.append(len(the_lab.queue()))

    asking = threading.Thread(target=ask_again_and_again)
    asking.start()
    try:
        the_lab.start("mx-beta")
    finally:
        done.set()
        asking.join(30)
    assert {s.node: s.state for s in the_lab.status()}["mx-beta"] == "running"
    assert answered
