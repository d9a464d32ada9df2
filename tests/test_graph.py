"""`mxlab graph`: golden drawings of shipped topologies, each format checked by the tool
that reads it where installed, and a running lab's states and queue sizes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mxlab
from mxlab.api import preview
from mxlab.lab import graph

from .conftest import TOPOLOGIES, wait_for

GOLDEN = Path(__file__).parent / "golden" / "graph"
# the plan's local subnet is derived from the lab directory: pin it for the golden files
FIXED_HOME = "/nonexistent/mxlab-golden-home"
UPDATE = os.environ.get("MXLAB_UPDATE_GOLDEN") == "1"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from mxlab.cli import main; main()", *args],
        capture_output=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def drawing(name: str, monkeypatch: pytest.MonkeyPatch) -> graph.Graph:
    monkeypatch.setenv("MXLAB_HOME", FIXED_HOME)
    return graph.build(preview(TOPOLOGIES / f"{name}.yaml"))


@pytest.mark.parametrize("name", ["relay-chain", "backup-mx"])
@pytest.mark.parametrize(("fmt", "ext"), [("mermaid", "mmd"), ("dot", "dot")])
def test_golden(name: str, fmt: str, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = graph.render(drawing(name, monkeypatch), fmt).decode()
    path = GOLDEN / f"{name}.{ext}"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (MXLAB_UPDATE_GOLDEN=1 rewrites it)"


def test_relay_chain_content(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a student needs to see: MX preferences, the chain, LMTP to the store."""
    g = drawing("relay-chain", monkeypatch)
    arrows = {(a.src, a.dst, a.label) for a in g.arrows}
    assert ("d_alpha_test", "n_mx_alpha", "MX 10") in arrows
    assert ("n_mx_alpha", "n_out_alpha", "next hop") in arrows
    assert ("n_out_alpha", "n_edge", "next hop") in arrows
    assert ("n_mx_beta", "n_store_beta", "LMTP beta.test") in arrows
    assert ("n_edge", "n_ns", "MX, A lookups") in arrows  # the chain's end asks DNS
    columns = {b.title: b.column for b in g.boxes}
    assert columns["alpha.test"] < columns["mx-alpha"] < columns["out-alpha"] < columns["edge"]
    assert columns["edge"] < columns["store-alpha"] < columns["ns"]


def test_backup_mx_preferences(monkeypatch: pytest.MonkeyPatch) -> None:
    g = drawing("backup-mx", monkeypatch)
    labels = {(a.src, a.dst): a.label for a in g.arrows}
    assert labels[("d_beta_test", "n_mx1_beta")] == "MX 10"
    assert labels[("d_beta_test", "n_mx2_beta")] == "MX 20"
    mx2 = next(b for b in g.boxes if b.title == "mx2-beta")
    assert "backup MX for beta.test (pref 20)" in mx2.lines


def _mermaid_ids(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    defined = set(re.findall(r"^\s+(\w+)(?:\[|\(|\{)", text, re.M))
    edges = re.findall(r"^\s+(\w+) (?:-->|==>|-\.->)\|\"[^\"]*\"\| (\w+)$", text, re.M)
    return defined, edges


def test_mermaid_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Mermaid CLI (mmdc) is packaged for Debian, so the flowchart is checked here:
    its header, balanced subgraph, arrows only between declared nodes, quoted labels."""
    text = graph.mermaid(drawing("relay-chain", monkeypatch))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert sum(ln.strip().startswith("subgraph") for ln in lines) == sum(
        ln.strip() == "end" for ln in lines
    )
    defined, edges = _mermaid_ids(text)
    assert len(edges) == sum("|" in ln for ln in lines) > 0
    assert {n for e in edges for n in e} <= defined
    assert '"' not in "".join(re.findall(r'\["(.*?)"\]', text))  # quotes escaped as #quot;


def test_mermaid_escapes_quotes() -> None:
    g = graph.Graph("x", 'net "q"', [graph.Box("a", "relay", 'a"b', ["<i>"])], [])
    text = graph.mermaid(g)
    assert "a#quot;b" in text and "&lt;i&gt;" in text and "net #quot;q#quot;" in text


@needs_dot
def test_dot_parsed_by_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    source = graph.dot(drawing("relay-chain", monkeypatch))
    run = subprocess.run(["dot", "-Tcanon"], input=source.encode(), capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
    assert b"cluster_net" in run.stdout


@needs_dot
def test_svg_and_png_from_the_cli(tmp_path: Path) -> None:
    topo = str(TOPOLOGIES / "backup-mx.yaml")
    svg = cli("graph", topo, "--format", "svg", env={"MXLAB_HOME": str(tmp_path)})
    assert svg.returncode == 0, svg.stderr
    root = ET.fromstring(svg.stdout)
    assert root.tag.endswith("svg")
    assert b">MX 20<" in svg.stdout  # dot writes "-" as &#45;, so check a label without one
    png = tmp_path / "lab.png"
    run = cli("graph", topo, "-f", "png", "-o", str(png), env={"MXLAB_HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_without_graphviz_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(mxlab.LabError, match="apt-get install graphviz"):
        graph.render(drawing("backup-mx", monkeypatch), "svg")


def test_html_is_self_contained_and_wellformed(monkeypatch: pytest.MonkeyPatch) -> None:
    g = drawing("relay-chain", monkeypatch)
    page = graph.page(g)
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "https://" not in page
    root = ET.fromstring(graph.svg(g))
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    assert {b.id for b in g.boxes} <= ids


def test_live_state_and_queue_marked() -> None:
    """A stopped node is drawn red and says so; a relay's queue size is shown."""
    plan_box = graph.Box("n_mx", "relay", "mx", ["queue: 3", "state: stopped"], "stopped")
    g = graph.Graph("x", "net", [plan_box], [])
    assert 'stroke="#c53030"' in graph.svg(g)
    assert 'color="#c53030"' in graph.dot(g)
    assert "class n_mx down" in graph.mermaid(g)


def test_running_lab(mxlab_home: Path) -> None:
    """A stopped MX and the mail queued for it show in the running lab's drawing."""
    with mxlab.Lab.up(TOPOLOGIES / "two-domains.yaml", runtime="local") as lab:
        lab.stop("mx-beta")
        lab.send("alice@alpha.test", ["bob@beta.test"], subject="queued")
        wait_for(lambda: lab.queue("mx-alpha"), 20, "mail queued at mx-alpha")
        run = cli("graph", lab.name, "--format", "mermaid")
        assert run.returncode == 0, run.stderr
        text = run.stdout.decode()
        assert "state: stopped" in text and "class n_mx_beta down" in text
        assert re.search(r"mx-alpha \(relay\)<br/>.*queue: 1<br/>state: running", text)
