"""`mxlab ui [LAB]`: the local web dashboard of a running lab."""

from __future__ import annotations

import secrets
import socket
from typing import Annotated

import typer

from mxlab.cli.app import LabArg, app, attach, out


@app.command()
def ui(
    lab: LabArg = None,
    port: Annotated[
        int, typer.Option(metavar="PORT", help="port on 127.0.0.1 (default: a free one)")
    ] = 0,
) -> None:
    """A web dashboard of the lab on 127.0.0.1: its drawing, node states, queues,
    mailboxes, zones, live events, message traces, fault drills and a send form. The
    URL it prints carries a random token; nothing answers without it."""
    import uvicorn

    from mxlab.ui.app import make_app

    the_lab = attach(lab)
    token = secrets.token_urlsafe(18)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    out.print(f"dashboard of lab {the_lab.name}: {url}", markup=False, soft_wrap=True)
    out.print("(Ctrl-C stops it; the lab keeps running)", markup=False)
    out.file.flush()
    config = uvicorn.Config(make_app(the_lab, token), log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
