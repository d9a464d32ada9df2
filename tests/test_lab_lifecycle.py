"""A lifecycle that matches the README: down leaves nothing (unless kept), commands find
only running labs, one `up` of a lab at a time, orphans are found and removed, lab files
are private, and the CLI speaks one way with no Python in its help."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from mxlab.cli import app, render
from mxlab.lab import labdir
from mxlab.lab.checks import Result
from mxlab.lab.runtime.docker import container_name
from mxlab.lab.runtime.local import orphans

from .conftest import TOPOLOGIES, wait_for
from .test_lab_local import _lab_processes, mxlab

TWO = TOPOLOGIES / "two-domains.yaml"
UP_CMD = [sys.executable, "-c", "from mxlab.cli import main; main()", "up", str(TWO), "-r", "local"]


def _renamed(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TWO.read_text().replace("name: two-domains", f"name: {name}"))
    return path


def test_down_removes_the_lab_and_keep_keeps_it(mxlab_home: Path) -> None:
    mxlab("up", str(TWO), "-r", "local")
    sent = mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test", "--json")
    assert json.loads(sent.stdout)["passed"] == 1
    lab_dir = labdir.lab_dir("two-domains")
    mxlab("down", "--keep")
    assert (lab_dir / "nodes" / "store-beta" / "state").is_dir()  # kept for inspection
    assert _lab_processes(str(lab_dir)) == []
    kept = mxlab("status", "two-domains")
    assert kept.stdout.count("stopped") == 5
    # a kept lab is not "up": commands that pick the only lab up say none is
    nothing = mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test", check=False)
    assert nothing.returncode == 2 and "no lab is up" in nothing.stderr
    # the next up starts empty: bob's old mail is gone
    mxlab("up", str(TWO), "-r", "local")
    try:
        box = mxlab("send", "--from", "carol@alpha.test", "--to", "bob@beta.test", "--json")
        assert json.loads(box.stdout)["passed"] == 1
        import mxlab as api

        lab = api.Lab.attach("two-domains")
        assert len(lab.mailbox("bob@beta.test").messages()) == 1
    finally:
        mxlab("down")
    assert not lab_dir.exists()


def test_commands_pick_the_running_lab_among_kept_ones(mxlab_home: Path, tmp_path: Path) -> None:
    mxlab("up", str(_renamed(tmp_path, "old")), "-r", "local")
    mxlab("down", "old", "--keep")
    mxlab("up", str(TWO), "-r", "local")
    try:
        proc = mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test", "--json")
        assert json.loads(proc.stdout)["passed"] == 1
        assert "two-domains" in mxlab("status").stdout
    finally:
        mxlab("down", "two-domains")
        mxlab("down", "old")
    assert list(labdir.home().joinpath("labs").iterdir()) == [] or all(
        p.name.startswith(".") for p in labdir.home().joinpath("labs").iterdir()
    )  # only lock files remain


def test_lab_state_is_private_and_the_plan_has_no_passwords(mxlab_home: Path) -> None:
    mxlab("up", str(TWO), "-r", "local")
    try:
        mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test")
        root = labdir.lab_dir("two-domains")
        assert "alice-secret" not in (root / "plan.json").read_text()
        assert json.loads((root / "secrets.json").read_text())["alice@alpha.test"] == (
            "alice-secret"
        )
        loose = []
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                continue
            if mode & 0o077:
                loose.append(f"{path.relative_to(root)} {oct(mode)}")
        assert loose == [], loose  # mail, queue files, keys, indexes: 0600/0700
    finally:
        mxlab("down")


def test_two_ups_of_one_lab_at_once_one_wins(mxlab_home: Path) -> None:
    env = dict(os.environ)
    procs = [
        subprocess.Popen(UP_CMD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    try:
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        loser = next(text for code, text in results if code == 2)
        lines = loser.strip().splitlines()
        assert len(lines) == 1 and ("being started" in lines[0] or "already running" in lines[0])
        status = mxlab("status", "--json")
        assert [n["state"] for n in json.loads(status.stdout)["nodes"]] == ["running"] * 5
    finally:
        mxlab("down", "two-domains")
    assert _lab_processes(str(labdir.lab_dir("two-domains"))) == []


def test_a_lab_whose_directory_vanished_can_still_be_brought_down(mxlab_home: Path) -> None:
    mxlab("up", str(TWO), "-r", "local")
    lab_dir = labdir.lab_dir("two-domains")
    pids = _lab_processes(str(lab_dir))
    assert len(pids) == 5
    shutil.rmtree(lab_dir)
    assert sorted(orphans()["two-domains"]) == sorted(map(int, pids))
    mxlab("down", "two-domains")
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 10, "orphans stopped")


def test_gc_removes_orphans_but_never_a_lab_coming_up(mxlab_home: Path) -> None:
    mxlab("up", str(TWO), "-r", "local")
    pids = _lab_processes(str(labdir.lab_dir("two-domains")))
    shutil.rmtree(labdir.lab_dir("two-domains"))
    with labdir.lock("two-domains"):  # as if an `up` were still running
        assert mxlab("gc").stdout.strip() == "nothing to remove"
        assert all(Path(f"/proc/{p}").exists() for p in pids)
    assert "two-domains (local)" in mxlab("gc").stdout
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 10, "orphans stopped")


def test_orphans_of_another_home_are_not_ours(mxlab_home: Path, tmp_path: Path) -> None:
    other = dict(os.environ, MXLAB_HOME=str(tmp_path / "other-home"))
    subprocess.run(UP_CMD, env=other, check=True, capture_output=True, timeout=120)
    try:
        shutil.rmtree(tmp_path / "other-home" / "labs" / "two-domains")
        assert orphans() == {}  # ours is empty; theirs is theirs
        assert mxlab("gc").stdout.strip() == "nothing to remove"
    finally:
        subprocess.run([*UP_CMD[:3], "gc"], env=other, check=True, capture_output=True)


def test_send_to_two_domains_judges_each_copy_on_its_own_route(mxlab_home: Path) -> None:
    mxlab("up", str(TWO), "-r", "local")
    try:
        proc = mxlab("send", "--from", "alice@alpha.test", "--to", "bob@beta.test",
                     "--to", "carol@alpha.test", "--json")  # fmt: skip
        results = {r["rcpt"]: r for r in json.loads(proc.stdout)["results"]}
        assert results["bob@beta.test"]["route_ok"] and results["carol@alpha.test"]["route_ok"]
        assert len(results["bob@beta.test"]["hops"]) == 3
        assert len(results["carol@alpha.test"]["hops"]) == 2
    finally:
        mxlab("down")


def test_container_names_cannot_collide() -> None:
    assert container_name("a", "b-c") != container_name("a-b", "c")


def _commands(group, path=()):  # noqa: ANN001, ANN202 - walks click's command tree
    for name, cmd in getattr(group, "commands", {}).items():
        yield (*path, name)
        yield from _commands(cmd, (*path, name))


def test_help_shows_no_python_types() -> None:
    import typer.main

    runner = CliRunner()
    root = typer.main.get_command(app)
    paths = [(), *_commands(root)]
    assert len(paths) > 20
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        found = re.findall(r"<[a-z_]+(?:\[[a-z_\[\]]+\])?>|\{[a-z_]+\}", result.output)
        assert not found, f"mxlab {' '.join(path)} --help shows {found}"


def test_tables_fit_80_columns_without_cutting_addresses() -> None:
    console = Console(width=80, record=True, force_terminal=False)
    rows = [
        Result("alexandra.longname@alpha-department.test", "bartholomew@beta-division.test",
               "<x@y>", [["mx-alpha.alpha-department.test"]], imap=True, pop3=True,
               bytes_equal=True, latency=0.2,
               hops=["mx-alpha.alpha-department.test", "mx-beta.beta-division.test",
                     "store-beta.beta-division.test"]),
    ]  # fmt: skip
    render.results(console, rows)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "alexandra.longname@alpha-department.test" in text
    assert "bartholomew@beta-division.test" in text


def test_every_table_command_has_json() -> None:
    runner = CliRunner()
    for path in (["status"], ["check"], ["run"], ["send"], ["trace"], ["queue", "list"],
                 ["scenario", "run"], ["validate"], ["up"]):  # fmt: skip
        result = runner.invoke(app, [*path, "--help"])
        assert "--json" in result.output, path
