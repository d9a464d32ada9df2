"""The pytest plugin as users meet it: pytest runs in a subprocess that loads the plugin
through its entry point, each with a private MXLAB_HOME, and must leave nothing behind:
no node process, no reaper, no lab directory, even when killed with SIGKILL. The
examples run the same way, copied out of the repository, plain and with xdist."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import mxlab
from mxlab.lab.runtime.docker import HOME
from mxlab.testing.reaper import LOG, Reaper, labs_left
from mxlab.testing.report import SECTION_CHARS, bounded
from tests.conftest import DOCKER, ROOT, needs_docker, wait_for

pytest_plugins = ["pytester"]

RUN_TIMEOUT = 180.0


def processes_of(home: Path) -> list[int]:
    """Live processes whose MXLAB_HOME is ``home``: nodes, reapers, inner pytests."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"MXLAB_HOME={home}".encode() in env and state not in ("Z", "X"):
            found.append(int(pid))
    return found


def labs_on_disk(home: Path) -> list[str]:
    root = home / "labs"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def nothing_left(home: Path) -> bool:
    return not processes_of(home) and not labs_on_disk(home)


@pytest.fixture
def home(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A private MXLAB_HOME for the inner runs; afterwards nothing of them may be left."""
    path = tmp_path / "mxlab-home"
    monkeypatch.setenv("MXLAB_HOME", str(path))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # when this suite runs under -n
    yield path
    wait_for(lambda: nothing_left(path), 30, f"nothing left in {path}")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)


def test_zero_configuration_gives_one_domain_with_two_users(
    pytester: pytest.Pytester, home: Path
) -> None:
    pytester.makepyfile(
        """
        def test_default(mail_lab):
            assert mail_lab.plan.runtime == "local"
            assert [u.address for u in mail_lab.users] == ["alice@example.test", "bob@example.test"]
            mail_lab.send("alice@example.test", ["bob@example.test"], subject="zero")
            msg = mail_lab.mailbox("bob@example.test").wait_for(subject="zero", timeout=30)
            assert msg["From"] == "alice@example.test"

        def test_the_session_shares_one_lab(mail_lab):
            assert mail_lab.mailbox("bob@example.test").wait_for(subject="zero", timeout=1)
        """
    )
    run(pytester).assert_outcomes(passed=2)


ONE_DOMAIN = """
name: {name}
nodes: {{ns: {{kind: dns}}, relay: {{kind: relay}}, box: {{kind: store}}}}
domains:
  {domain}:
    store: box
    mx: [{{node: relay, preference: 10}}]
    users: {{carol: carol-secret, dave: dave-secret}}
"""


def test_the_ini_option_names_the_topology(pytester: pytest.Pytester, home: Path) -> None:
    (pytester.path / "labs").mkdir()
    (pytester.path / "labs" / "ini.yaml").write_text(
        ONE_DOMAIN.format(name="ini-lab", domain="ini.test")
    )
    pytester.makeini("[pytest]\nmxlab_topology = labs/ini.yaml\nmxlab_runtime = local\n")
    pytester.makepyfile(
        """
        def test_ini(mail_lab):
            assert mail_lab.name == "ini-lab"
            assert list(mail_lab.plan.domains) == ["ini.test"]
            mail_lab.send("carol@ini.test", ["dave@ini.test"], subject="ini")
            mail_lab.mailbox("dave@ini.test").wait_for(subject="ini", timeout=30)
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_a_marker_chooses_the_topology_per_module(pytester: pytest.Pytester, home: Path) -> None:
    marked = yaml.safe_load(ONE_DOMAIN.format(name="marked", domain="marked.test"))
    pytester.makepyfile(
        test_a_marked=f"""
        import pytest

        pytestmark = pytest.mark.mxlab(topology={marked!r})
        started = []

        def test_first(mail_lab):
            assert list(mail_lab.plan.domains) == ["marked.test"]
            started.append({{s.node: s.detail for s in mail_lab.status()}})

        def test_second_shares_it(mail_lab):
            assert {{s.node: s.detail for s in mail_lab.status()}} == started[0]

        @pytest.mark.mxlab(topology="marked.yaml")
        def test_a_file_beside_the_test(mail_lab):
            assert list(mail_lab.plan.domains) == ["file.test"]
        """,
        test_b_default="""
        def test_default(mail_lab):
            assert list(mail_lab.plan.domains) == ["example.test"]
        """,
        test_0_default_by_marker="""
        import pytest
        from mxlab.testing.pool import DEFAULT_TOPOLOGY

        started = []

        @pytest.mark.mxlab(topology=DEFAULT_TOPOLOGY)
        def test_marked_with_the_default(mail_lab):
            started.append({s.node: s.detail for s in mail_lab.status()})

        def test_unmarked_gets_the_same_lab(mail_lab):
            assert {s.node: s.detail for s in mail_lab.status()} == started[0]
        """,
    )
    (pytester.path / "marked.yaml").write_text(
        ONE_DOMAIN.format(name="from-file", domain="file.test")
    )
    run(pytester).assert_outcomes(passed=6)


def test_xdist_workers_each_get_their_own_lab(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import json, os, pathlib, pytest

        @pytest.mark.parametrize("n", range(4))
        def test_send(mail_lab, n):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert mail_lab.name == f"pytest-{worker}"
            mail_lab.send("alice@example.test", ["bob@example.test"], subject=f"n{n}")
            mail_lab.mailbox("bob@example.test").wait_for(subject=f"n{n}", timeout=30)
            seen = {"lab": mail_lab.name, "subnet": mail_lab.plan.subnet}
            pathlib.Path(f"{worker}.json").write_text(json.dumps(seen))
        """
    )
    run(pytester, "-n", "2").assert_outcomes(passed=4)
    seen = [json.loads(p.read_text()) for p in sorted(pytester.path.glob("gw*.json"))]
    assert [s["lab"] for s in seen] == ["pytest-gw0", "pytest-gw1"]
    assert seen[0]["subnet"] != seen[1]["subnet"]


def test_a_failed_test_reports_mailboxes_queues_and_trace(
    pytester: pytest.Pytester, home: Path
) -> None:
    pytester.makepyfile(
        """
        def test_wrong_subject(mail_lab):
            sent = mail_lab.send("alice@example.test", ["bob@example.test"], subject="actual")
            mail_lab.mailbox("bob@example.test").wait_for(message_id=sent.message_id)
            mail_lab.stop("store")  # the next one waits in the relay's queue, held there
            mail_lab.send("alice@example.test", ["bob@example.test"], subject="queued")
            mail_lab.queue_action("hold")
            mail_lab.start("store")
            assert False, "the test wanted another subject"
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*mxlab pytest: mailboxes*",
            "alice@example.test: 0 message(s)",
            "bob@example.test: 1 message(s)",
            "  'actual' from alice@example.test to bob@example.test <*@mxlab.test>",
            "*mxlab pytest: queues*",
            "mx * hold age * from <alice@example.test> <*@mxlab.test> attempts 1",
            "  to bob@example.test pending: 4*",
            "*mxlab pytest: trace since the test began*",
            "* mx received * from=alice@example.test to=?'bob@example.test'? status=queued",
            "* store delivered *",
        ]
    )


def test_report_sections_are_bounded() -> None:
    text = bounded("x" * (SECTION_CHARS * 3))
    assert len(text) < SECTION_CHARS + 100
    assert text.endswith(f"({SECTION_CHARS * 2} more characters)")


def test_the_reaper_reaps_what_was_started_and_not_brought_down() -> None:
    lines = io.StringIO("+a\n+b\n-a\n+c\n")
    assert labs_left(lines) == ["b", "c"]


def test_what_the_reaper_prints_is_kept_in_its_log(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It outlives the run, so its own log is where a failure can be read."""
    monkeypatch.setenv("PYTHONVERBOSE", "1")  # the interpreter reports its imports on stderr
    reaper = Reaper()
    reaper.close()
    log = home / LOG
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "import 'mxlab'" in log.read_text()


def test_leftovers_of_earlier_runs_are_cleaned_on_the_next_start(
    pytester: pytest.Pytester, home: Path
) -> None:
    stale = mxlab.Lab.up(
        yaml.safe_load(ONE_DOMAIN.format(name="stale", domain="stale.test")), "local"
    )
    stale_nodes = [int(s.detail) for s in stale.status()]
    shutil.rmtree(stale.directory)  # a run whose directory went, its nodes still running
    # a run whose reaper died with it: its lab, of the name the plugin uses, still up
    previous = mxlab.Lab.up(
        yaml.safe_load(ONE_DOMAIN.format(name="pytest", domain="old.test")), "local"
    )
    previous_nodes = [int(s.detail) for s in previous.status()]
    pytester.makepyfile(
        """
        def test_fresh(mail_lab):
            assert list(mail_lab.plan.domains) == ["example.test"]
        """
    )
    run(pytester).assert_outcomes(passed=1)
    left = set(stale_nodes + previous_nodes)
    wait_for(lambda: not left & set(processes_of(home)), 30, "the earlier runs' nodes gone")


BLOCKING_TEST = """
import json, os, pathlib, time

def test_blocks(mail_lab):
    ready = {"dir": str(mail_lab.directory), "pid": os.getpid()}
    pathlib.Path("ready.tmp").write_text(json.dumps(ready))
    os.replace("ready.tmp", "ready.json")  # whole when seen: the outer test polls for it
    deadline = time.monotonic() + 120
    while not pathlib.Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def kill_mid_run(pytester: pytest.Pytester, home: Path, *args: str) -> dict[str, object]:
    """Start pytest, wait until its test holds a running lab, SIGKILL it."""
    pytester.makepyfile(BLOCKING_TEST)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    proc = subprocess.Popen(
        argv, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ready = pytester.path / "ready.json"
        wait_for(lambda: ready.exists() or proc.poll() is not None, 300, "the lab up")
        assert ready.exists(), f"the inner pytest exited with {proc.returncode}"
        seen = json.loads(ready.read_text())
        assert Path(seen["dir"]).is_dir()
        assert processes_of(home)  # pytest, its reaper (and the nodes on the local runtime)
        assert labs_on_disk(home)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return seen


def docker_leftovers(home: Path) -> list[str]:
    """Containers and networks labelled with this MXLAB_HOME."""
    if DOCKER is None:
        return []
    label = {"label": f"{HOME}={home.resolve()}"}
    found = DOCKER.containers.list(all=True, filters=label) + DOCKER.networks.list(filters=label)
    return [item.name for item in found]


@pytest.mark.parametrize(
    "args",
    [
        ["--mxlab-runtime", "local"],
        ["--mxlab-runtime", "local", "-n", "2"],  # the workers outlive the controller a while
        pytest.param(["--mxlab-runtime", "docker"], marks=needs_docker),
    ],
    ids=["local", "local-xdist", "docker"],
)
def test_a_run_killed_with_sigkill_leaves_nothing_behind(
    pytester: pytest.Pytester, home: Path, args: list[str]
) -> None:
    seen = kill_mid_run(pytester, home, *args)
    wait_for(
        lambda: nothing_left(home) and not docker_leftovers(home),
        120,
        "the reaper to remove the lab",
    )
    assert not Path(str(seen["dir"])).exists()


# -- the examples, as users run them ------------------------------------------------
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_the_examples_pass(pytester: pytest.Pytester, home: Path, args: list[str]) -> None:
    shutil.copytree(
        EXAMPLES, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("ci")
    )
    run(pytester, *args).assert_outcomes(passed=5)


def test_the_ci_jobs_install_mxlab_and_run_both_runtimes() -> None:
    github = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())
    gitlab = yaml.safe_load((EXAMPLES / "ci" / "gitlab-ci.yml").read_text())
    github_runs = {
        job: [step.get("run", "") for step in spec["steps"]] for job, spec in github["jobs"].items()
    }
    gitlab_runs = {job: spec["script"] for job, spec in gitlab.items()}
    for runs in [*github_runs.values(), *gitlab_runs.values()]:
        assert any(r.startswith("pip install mxlab") for r in runs)
    commands = [r for runs in [*github_runs.values(), *gitlab_runs.values()] for r in runs]
    for runtime in ("local", "docker"):
        assert sum("pytest" in c and f"--mxlab-runtime {runtime}" in c for c in commands) == 2
