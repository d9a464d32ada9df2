"""Looking inside a lab: `mxlab explain`, `dig`, `shell`, and `trace` as a timeline
with the DNS answers that chose each route and the retries with their reasons."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

import mxlab
from mxlab.cli import render

from .conftest import TOPOLOGIES, wait_for


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from mxlab.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mxlab.Lab]:
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("MXLAB_HOME")
    os.environ["MXLAB_HOME"] = str(home)
    try:
        with mxlab.Lab.up(TOPOLOGIES / "relay-chain.yaml", runtime="local") as the_lab:
            yield the_lab
    finally:
        if old is None:
            os.environ.pop("MXLAB_HOME", None)
        else:
            os.environ["MXLAB_HOME"] = old


def test_explain_a_file_needs_no_lab(tmp_path: Path) -> None:
    run = cli("explain", str(TOPOLOGIES / "backup-mx.yaml"), "mx2-beta")
    assert run.returncode == 0, run.stderr
    assert "backup MX (preference 20)" in run.stdout
    assert "the zone says: 10 mx1.beta.test, 20 mx2.beta.test" in run.stdout


def test_explain_relay_chain_live(lab: mxlab.Lab) -> None:
    run = cli("explain", lab.name, "mx-alpha")
    assert run.returncode == 0, run.stderr
    out = " ".join(run.stdout.split())
    assert "Accepts mail for alpha.test as its best MX: users alice, carol" in out
    assert "by LMTP" in out and "store-alpha (imap.alpha.test" in out
    assert "to its next hop (smarthost) out-alpha (out.alpha.test" in out
    edge = " ".join(cli("explain", lab.name, "edge").stdout.split())
    assert "MX 10 mx.beta.test. -> mx-beta (mx.beta.test" in edge  # asked live
    assert "Relays anything from out-alpha" in edge
    store = " ".join(cli("explain", lab.name, "store-beta").stdout.split())
    assert "bob@beta.test, dave@beta.test" in store and "from mx-beta" in store
    assert "no node 'nope'" in cli("explain", lab.name, "nope").stderr


def test_dig_and_record_changes(lab: mxlab.Lab) -> None:
    mx = cli("dig", lab.name, "beta.test", "MX")
    assert mx.returncode == 0 and "10 mx.beta.test." in mx.stdout
    assert cli("dig", "nothere.beta.test").returncode == 1  # NXDOMAIN: like a failed lookup
    added = cli("dns", "add", lab.name, "www.beta.test", "A", "127.0.0.9")
    assert added.returncode == 0, added.stderr
    assert "127.0.0.9" in cli("dig", "www.beta.test").stdout
    assert "127.0.0.9" in cli("dns", "zone").stdout  # the plan shows it too
    assert cli("dns", "remove", "www.beta.test", "A").returncode == 0
    assert "NXDOMAIN" in cli("dig", "www.beta.test").stdout


def test_shell_runs_in_the_node_folder(lab: mxlab.Lab) -> None:
    run = cli("shell", lab.name, "mx-beta", stdin='echo "$MXLAB_NODE $PWD"; exit 7\n')
    assert run.returncode == 7
    assert run.stdout.strip() == f"mx-beta {lab.directory / 'nodes' / 'mx-beta'}"


def test_trace_timeline_shows_dns_answers_and_retries(lab: mxlab.Lab) -> None:
    lab.stop("mx-beta")
    try:
        sent = lab.send("alice@alpha.test", ["bob@beta.test"], subject="timeline")
        wait_for(
            lambda: any(e.event == "deferred" for e in lab.trace(sent.message_id)),
            20,
            "a deferral at edge",
        )
    finally:
        lab.start("mx-beta")
    lab.queue_action("flush", node="edge")
    lab.mailbox("bob@beta.test").wait_for(message_id=sent.message_id, timeout=30)
    events = lab.trace(sent.message_id)
    console = Console(file=io.StringIO(), width=220)
    render.trace(console, sent.message_id, events)
    # the details column wraps at spaces (how far depends on the lab's addresses and
    # ids): read the words in order, whatever line they landed on
    text = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    assert "MX beta.test: 10 mx.beta.test; try mx.beta.test" in text
    assert "retry later (attempt 1)" in text and "Connection refused" in text
    assert "+0." in text  # delays between hops
    assert "path: mx-alpha > out-alpha > edge > mx-beta > store-beta" in text
    assert "deferral(s)" in text


def test_cert_check(lab: mxlab.Lab) -> None:
    ok = cli("cert", "check", lab.name, "store-beta")
    assert ok.returncode == 0 and "trusted (lab CA)" in ok.stdout
    assert "serves no TLS" in cli("cert", "check", lab.name, "ns").stderr
