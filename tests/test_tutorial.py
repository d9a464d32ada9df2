"""docs/tutorial.md is run as written: every command of its ```sh blocks, in order, in
one shell (so `ID=$(...)` carries over), against a local lab; each must exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

TUTORIAL = ROOT / "docs" / "tutorial.md"


def commands(markdown: str) -> list[str]:
    """Each non-empty, non-comment line of every ```sh block."""
    blocks = re.findall(r"^```sh\n(.*?)^```", markdown, re.S | re.M)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_commands_are_found() -> None:
    cmds = commands(TUTORIAL.read_text())
    assert cmds[0].startswith("mxlab up ") and cmds[-1] == "mxlab down"
    steps = re.findall(r"^## Step (\d)", TUTORIAL.read_text(), re.M)
    assert steps == ["1", "2", "3", "4", "5", "6"]  # the six steps of the mail flow


def test_every_command_exits_0(tmp_path: Path) -> None:
    (tmp_path / "topologies").symlink_to(ROOT / "topologies")
    env = {
        **os.environ,
        "MXLAB_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",  # rich tables fold long cells at 80 columns in a pipe
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    script = ["set -o pipefail"]
    for n, cmd in enumerate(commands(TUTORIAL.read_text())):
        script += [
            f"echo '>>> {n}'",
            cmd,
            f"rc=$?; [ $rc -eq 0 ] || {{ echo 'FAILED {n}'; exit 1; }}",
        ]
    try:
        run = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(["mxlab", "down"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    failed = re.search(r"FAILED (\d+)", run.stdout)
    if failed:
        cmd = commands(TUTORIAL.read_text())[int(failed.group(1))]
        raise AssertionError(
            f"tutorial command failed: {cmd}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # what the tutorial says the student sees
    assert "10 mx-beta.beta.test." in out
    assert "MX beta.test: 10 mx-beta.beta.test" in out  # trace's route line
    assert "retry later" in out  # the deferred attempts while beta was down
    assert "Received: from mx-alpha.alpha.test by mx-beta.beta.test" in out
    assert "Undelivered Mail Returned to Sender" in out  # alice's bounce
    assert (tmp_path / "lab.html").read_text().startswith("<!doctype html>")
