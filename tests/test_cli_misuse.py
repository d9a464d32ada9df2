"""CLI misuse, kept as a corpus: every case is one line on stderr, exit 2, no traceback,
nothing on stdout, nothing written outside MXLAB_HOME's lab folders. (Malformed
topologies have their own corpus in tests/test_lab_corpus.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TOPOLOGIES

TWO = str(TOPOLOGIES / "two-domains.yaml")
SEND = ["send", "--from", "alice@alpha.test"]

# (arguments, a piece of the one line it must print)
WITHOUT_A_LAB = [
    (["status"], "no lab is up"),
    ([*SEND, "--to", "bob@beta.test"], "no lab is up"),
    (["down"], "no lab is up"),
    (["kill", "mx-alpha"], "no lab is up"),
    (["trace", "<x@y.test>"], "no lab is up"),
    (["queue"], "no lab is up"),
    (["dns", "zone"], "no lab is up"),
    (["exec", "ns", "--", "ls"], "no lab is up"),
    (["logs", "ns"], "no lab is up"),
    (["check"], "no lab is up"),
    (["hosts"], "no lab is up"),
    (["status", "nolab"], "no lab named 'nolab'"),
    (["down", "nolab"], "no lab named 'nolab'"),
    (["bogus"], "No such command 'bogus'"),
    (["up"], "Missing argument 'TOPOLOGY'"),
    (["validate"], "Missing argument 'TOPOLOGY'"),
    (["up", "/nonexistent/lab.yaml"], "/nonexistent/lab.yaml"),
    (["run", TWO, "--runtime", "vm"], "use docker, local, swarm, hosts or auto"),
    (["send", "--frmo", "x"], "No such option: --frmo"),
    (["check", "--timeout", "abc"], "Invalid value for '--timeout'"),
    (["scenario", "run", "/nonexistent/s.yaml"], "/nonexistent/s.yaml"),
    (["queue", "hold"], "no lab is up"),
    (["dns", "fail"], "Missing argument '[LAB] NAME'"),
    (["status", "a", "b"], "Got unexpected extra argument"),
]

WITH_A_LAB = [
    (["send", "--from", "eve@alpha.test", "--to", "bob@beta.test"], "not a user"),
    ([*SEND, "--to", "nobody@alpha.test"], "550"),
    ([*SEND, "--to", "bob@beta.test", "--subject", "a\r\nBcc: x@y.test"], "linefeed"),
    ([*SEND, "--to", "bob@beta.test\r\nRCPT TO:<x@y.test>"], "linefeed"),
    ([*SEND, "--to", "bob@beta.test", "--attach", "/nonexistent/f.pdf"], "no such file"),
    ([*SEND], "send needs --from ADDRESS and at least one --to ADDRESS"),
    (["send", "--to", "bob@beta.test"], "send needs --from"),
    (["kill", "nosuch"], "has no node 'nosuch'"),
    (["start", "two-domains", "nosuch"], "has no node 'nosuch'"),
    (["exec", "nosuch", "--", "ls"], "has no node 'nosuch'"),
    (["exec", "ns"], "nothing to run"),
    (["logs", "nosuch"], "has no node 'nosuch'"),
    (["trace", "<nobody@nowhere.test>"], "no node of lab two-domains logged"),
    (["trace", "a", "b", "c"], "expected [LAB] MESSAGE-ID"),
    (["queue", "nosuch"], "'nosuch' is neither a lab nor a node"),
    (["queue", "hold"], "name the queue ids to hold, or ALL"),
    (["queue", "hold", "ns", "ABC"], "ns is a dns node, not a relay"),
    (["queue", "delete", "ABCDEF123"], "not queued at"),
    (["dns", "fail", "beta.test", "--mode", "bogus"], "unknown DNS fault 'bogus'"),
    (["cut", "mx-alpha"], "link faults need the docker runtime"),
    (["up", TWO, "-r", "local"], "already running"),
    (["down", "otherlab"], "no lab named 'otherlab'"),
]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from mxlab.cli import main; main()", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=dict(os.environ),
    )  # fmt: skip


def _assert_one_line(proc: subprocess.CompletedProcess, want: str, cwd: Path) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ") and want in lines[0], lines[0]
    assert proc.stdout == "", proc.stdout
    assert list(cwd.iterdir()) == [], "wrote into the working directory"


@pytest.mark.parametrize(("args", "want"), WITHOUT_A_LAB, ids=lambda a: " ".join(a)[:40])
def test_misuse_without_a_lab(args: list[str], want: str, mxlab_home: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _assert_one_line(_run(args, cwd), want, cwd)
    made = [p for p in mxlab_home.rglob("*") if not p.name.startswith(".")]
    assert all(p.name == "labs" for p in made), made  # nothing but (at most) the labs folder


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("misuse-home")
    old = os.environ.get("MXLAB_HOME")
    os.environ["MXLAB_HOME"] = str(home)
    cwd = tmp_path_factory.mktemp("misuse-cwd")
    try:
        up = _run(["up", TWO, "-r", "local"], cwd)
        assert up.returncode == 0, up.stderr
        yield cwd
    finally:
        _run(["down", "two-domains"], cwd)
        if old is None:
            del os.environ["MXLAB_HOME"]
        else:
            os.environ["MXLAB_HOME"] = old


@pytest.mark.parametrize(("args", "want"), WITH_A_LAB, ids=lambda a: " ".join(a)[:40])
def test_misuse_with_a_running_lab(args: list[str], want: str, running_lab: Path) -> None:
    _assert_one_line(_run(args, running_lab), want, running_lab)
    # and the lab still serves: misuse broke nothing
    ok = _run(["status", "--json"], running_lab)
    assert ok.returncode == 0 and ok.stdout.count('"running"') == 5
