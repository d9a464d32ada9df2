"""`mxlab dns add|remove`: change the running lab's DNS records (the DNS node restarts to
serve them) - how a student fixes a broken record while the lab runs."""

from __future__ import annotations

from typing import Annotated

import typer

import mxlab
from mxlab.cli.app import argument, attach, out
from mxlab.cli.dns import dns_app


def _lab_and(words: list[str], least: int) -> tuple[str | None, list[str]]:
    """A leading lab name, when the first word names a running lab and more follow."""
    if len(words) > least and words[0] in mxlab.labs():
        return words[0], words[1:]
    return None, words


@dns_app.command("add")
def add(
    args: Annotated[list[str], argument("[LAB] NAME TYPE VALUE")],
    ttl: Annotated[int, typer.Option(metavar="SECONDS", help="the record's TTL")] = 300,
) -> None:
    """Add a record, e.g. mxlab dns add mail.beta.test A 127.64.1.8"""
    lab, words = _lab_and(args, 3)
    if len(words) < 3:
        raise mxlab.LabError("expected [LAB] NAME TYPE VALUE (quote a VALUE with spaces)")
    name, rdtype, value = words[0], words[1], " ".join(words[2:])
    attach(lab).dns_add(name, rdtype, value, ttl)
    out.print(f"added {name} {rdtype.upper()} {value}; the lab DNS serves it now", markup=False)


@dns_app.command("remove")
def remove(args: Annotated[list[str], argument("[LAB] NAME TYPE [VALUE]")]) -> None:
    """Remove a record (every record of that name and type without VALUE), e.g.
    mxlab dns remove beta.test MX "10 store-beta.beta.test." """
    lab, words = _lab_and(args, 2)
    if len(words) < 2:
        raise mxlab.LabError("expected [LAB] NAME TYPE [VALUE]")
    name, rdtype, value = words[0], words[1], " ".join(words[2:]) or None
    attach(lab).dns_remove(name, rdtype, value)
    what = f"{name} {rdtype.upper()}" + (f" {value}" if value else "")
    out.print(f"removed {what}; the lab DNS serves the change now", markup=False)
