"""The README's front door on a machine that has never seen mxlab: the wheel, installed
into an empty virtual environment with only its declared dependencies, runs a lab end to
end. An undeclared import fails here, not on a user's machine."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .conftest import TOPOLOGIES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)
def test_wheel_in_an_empty_venv_runs_the_readme_lab(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("mxlab-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # no system site packages: nothing leaks in
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))} | {
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "MXLAB_HOME": str(tmp_path / "home"),
    }
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    # from a folder that is not the checkout: only the installed package can be imported
    work = tmp_path / "elsewhere"
    work.mkdir()
    run = subprocess.run(
        [str(env_dir / "bin" / "mxlab"), "run", str(TOPOLOGIES / "two-domains.yaml"),
         "--runtime", "local"],
        capture_output=True, text=True, timeout=300, env=env, cwd=work,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "12 passed, 0 failed" in run.stdout
    assert "Traceback" not in run.stderr
