"""`mxlab graph FILE|LAB`: draw a lab - from a topology file, or a running lab with its
node states and queue sizes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import mxlab
from mxlab.api import preview
from mxlab.cli.app import app, argument, attach, out
from mxlab.lab import graph as drawing
from mxlab.lab.plan import LabPlan


def plan_or_lab(target: str | None) -> tuple[LabPlan, mxlab.Lab | None]:
    """A topology file's plan (nothing started), or a running lab by name."""
    if target is not None and (Path(target).is_file() or target.endswith((".yaml", ".yml"))):
        return preview(Path(target)), None
    lab = attach(target)
    return lab.plan, lab


@app.command()
def graph(
    target: Annotated[
        str | None,
        argument("[FILE|LAB]"),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", metavar="FORMAT", help="mermaid, dot, svg, png or html"),
    ] = "mermaid",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="write here")
    ] = None,
) -> None:
    """Draw a lab: nodes by role, domains and MX preferences, relay chains, the store
    each relay delivers to, the network and addresses; a running lab adds node states
    and queue sizes. svg and png need Graphviz (dot); mermaid, dot and html need nothing."""
    if fmt not in drawing.FORMATS:
        raise mxlab.LabError(f"unknown format {fmt!r} (one of {', '.join(drawing.FORMATS)})")
    plan, lab = plan_or_lab(target)
    g = lab.graph() if lab is not None else drawing.build(plan)
    data = drawing.render(g, fmt)
    if output is not None:
        output.write_bytes(data)
        out.print(f"wrote {output} ({fmt}, {len(data)} bytes)")
    else:
        sys.stdout.buffer.write(data)
