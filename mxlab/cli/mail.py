"""`mxlab send|trace`: one message through the lab, and the path it took."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

import mxlab
from mxlab.cli import render
from mxlab.cli.app import JsonOpt, LabArg, app, argument, attach, out, split_lab
from mxlab.lab import report


@app.command()
def send(
    lab: LabArg = None,
    sender: Annotated[
        str, typer.Option("--from", metavar="ADDRESS", help="a lab user, e.g. alice@alpha.test")
    ] = "",
    to: Annotated[
        list[str] | None, typer.Option("--to", metavar="ADDRESS", help="recipient (repeatable)")
    ] = None,
    subject: Annotated[str, typer.Option(metavar="TEXT")] = "mxlab test message",
    body: Annotated[str, typer.Option(metavar="TEXT")] = "Hello from mxlab.\n",
    attach_files: Annotated[
        list[Path] | None, typer.Option("--attach", metavar="FILE", help="file to attach")
    ] = None,
    wait: Annotated[
        float, typer.Option(metavar="SECONDS", help="wait for delivery (0: don't)")
    ] = 30,
    json_out: JsonOpt = False,
) -> None:
    """Submit one message as a lab user (587, STARTTLS, AUTH) and, by default, prove each
    lab recipient's copy arrived by its own route."""
    if not sender or not to:
        raise mxlab.LabError("send needs --from ADDRESS and at least one --to ADDRESS")
    the_lab = attach(lab)
    sent = the_lab.send(sender, to, subject, body, attachments=attach_files or [])
    if not json_out:
        out.print(f"submitted {sent.message_id} ({len(sent.data)} bytes) to {len(to)} recipient(s)")
    results = the_lab.delivered(sent, wait) if wait > 0 else []
    if json_out:
        doc = {"message_id": sent.message_id, "size": len(sent.data), "recipients": to}
        doc |= json.loads(report.as_json(results)) if wait > 0 else {}
        print(json.dumps(doc, indent=2))
    elif results:
        render.results(out, results)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def trace(
    args: Annotated[list[str], argument("[LAB] MESSAGE-ID")],
    json_out: JsonOpt = False,
) -> None:
    """Follow a message across the lab's nodes by its Message-ID."""
    lab, (message_id,) = split_lab(args, "[LAB] MESSAGE-ID")
    the_lab = attach(lab)
    events = the_lab.trace(message_id)
    if not events:
        raise mxlab.LabError(f"no node of lab {the_lab.name} logged {message_id}")
    if json_out:
        rows = [{"ts": e.ts, "node": e.node, "event": e.event, **e.fields} for e in events]
        print(json.dumps(rows, indent=2))
        return
    render.trace(out, message_id, events)
