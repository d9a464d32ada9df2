"""`mxlab dns zone|fail|restore|ask`: the lab's DNS, and breaking it on purpose."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

import mxlab
from mxlab.cli.app import LabArg, app, argument, attach, out, split_lab

dns_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The lab's DNS.")
app.add_typer(dns_app, name="dns")


@dns_app.command("zone")
def zone(lab: LabArg = None) -> None:
    """Print the lab's zones in BIND format."""
    sys.stdout.write(attach(lab).zones())


@dns_app.command("fail")
def fail(
    args: Annotated[list[str], argument("[LAB] NAME")],
    mode: Annotated[str, typer.Option(metavar="MODE", help="servfail, timeout, or drop_mx")] = (
        "servfail"
    ),
) -> None:
    """Make a name fail in the lab's DNS (SERVFAIL, no answer, or no MX) until restored."""
    lab, (name,) = split_lab(args, "[LAB] NAME")
    attach(lab).dns_fail(name, mode)
    out.print(f"{name}: {mode} until mxlab dns restore")


@dns_app.command("restore")
def restore(
    args: Annotated[list[str] | None, argument("[LAB] [NAME]")] = None,
) -> None:
    """Lift DNS faults (all, or one name's)."""
    words = list(args or [])
    lab: str | None
    names: list[str]
    if len(words) == 1 and words[0] in mxlab.labs():
        lab, names = words[0], []
    else:
        lab, names = split_lab(words, "[LAB] [NAME]", want=len(words[:1]))
    left = attach(lab).dns_restore(names[0] if names else None)
    out.print("DNS faults left: " + (", ".join(left) if left else "none"))
