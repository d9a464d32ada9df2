"""`mxlab sink serve|list`: an SMTP sink on this machine (for a lab's external node to
point at), and what a sink kept."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import typer

from mxlab.cli.app import LabArg, app, attach, out
from mxlab.lab.errors import LabError

sink_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="An SMTP sink that keeps what it receives."
)
app.add_typer(sink_app, name="sink")

DirOpt = Annotated[
    Path | None, typer.Option("--dir", metavar="DIR", help="the sink's directory (its record)")
]


@sink_app.command("serve")
def serve(
    directory: Annotated[
        Path, typer.Option("--dir", metavar="DIR", help="where to keep each message")
    ],
    listen: Annotated[
        str, typer.Option("--listen", metavar="HOST:PORT", help="address and port to take SMTP on")
    ] = "127.0.0.1:2525",
) -> None:
    """Take SMTP on HOST:PORT, any sender and any recipient, and keep every message with
    its envelope in DIR (fsynced before the 250). Runs until Ctrl-C."""
    from mxlab.lab.sink import run_sink

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LabError(f"--listen {listen}: write HOST:PORT, e.g. 127.0.0.1:2525")
    out.print(f"sink on {host}:{port}, keeping mail in {directory}")
    run_sink(host, int(port), directory)


@sink_app.command("list")
def list_(
    node: Annotated[str | None, typer.Argument(metavar="[NODE]", hidden=True)] = None,
    lab: LabArg = None,
    directory: DirOpt = None,
) -> None:
    """What a sink kept: a lab's sink NODE, or the sink serving --dir DIR."""
    from mxlab.lab.sink import Sink

    if directory is not None:
        sink = Sink(directory)
    elif node is not None:
        sink = attach(lab).sink(node)
    else:
        raise LabError("name a sink node of the lab, or --dir DIR of a sink on this machine")
    for m in sink.messages():
        when = datetime.datetime.fromtimestamp(m.received).isoformat(timespec="seconds")
        rcpts = ", ".join(m.rcpt_tos)
        tls = m.tls or "plaintext"
        out.print(
            f"{when}  {m.id}  from <{m.mail_from}> to {rcpts}  {tls}  {m.message_id}", markup=False
        )
