"""`mxlab cert check|renew`: a node's TLS certificate in the running lab."""

from __future__ import annotations

from typing import Annotated

import typer

from mxlab.cli.app import app, argument, attach, out, split_lab

cert_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The nodes' TLS certificates."
)
app.add_typer(cert_app, name="cert")
NodeArgs = Annotated[list[str], argument("[LAB] NODE")]


@cert_app.command("check")
def check(args: NodeArgs) -> None:
    """Verify a node's certificate as a client trusting the lab CA would (name and
    dates, RFC 6125); exit 1 when it is not trusted."""
    lab, (node,) = split_lab(args, "[LAB] NODE")
    ok, why = attach(lab).cert_check(node)
    out.print(why, markup=False)
    if not ok:
        raise typer.Exit(1)


@cert_app.command("renew")
def renew(args: NodeArgs) -> None:
    """Issue the node a new certificate from the lab CA and restart it to load it."""
    lab, (node,) = split_lab(args, "[LAB] NODE")
    the_lab = attach(lab)
    the_lab.cert_renew(node)
    out.print(the_lab.cert_check(node)[1], markup=False)
