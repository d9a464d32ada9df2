"""docs/api.md stays true: its example runs against a local lab, and every public name
(mxlab.__all__, the public methods of Lab and Mailbox) is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mxlab
from tests.conftest import ROOT

DOC = ROOT / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_the_example_runs(mxlab_home: Path) -> None:
    (example,) = python_blocks(DOC.read_text())
    exec(compile(example, str(DOC), "exec"), {"__name__": "docs_api_example"})
    labs = mxlab_home / "labs"
    assert not [p for p in labs.iterdir() if p.is_dir()], "the example left its lab behind"


@pytest.mark.parametrize(
    "name",
    list(mxlab.__all__)
    + [f"lab.{n}" for n in dir(mxlab.Lab) if not n.startswith("_") and n not in ("up", "attach")]
    + ["Lab.up", "Lab.attach"]
    + [f".{n}" for n in dir(mxlab.Mailbox) if not n.startswith("_")],
)
def test_every_public_name_is_documented(name: str) -> None:
    assert f"{name}" in DOC.read_text(), f"docs/api.md does not mention {name}"
