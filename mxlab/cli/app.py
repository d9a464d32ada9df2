"""The typer application every command module registers on, and what they share: the
two consoles, the argument types, and how a command finds its lab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import mxlab
from mxlab.api import Lab

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no Python types in it
    help="Spin up a mail cluster as a lab and prove mail crosses it.",
)

out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def argument(metavar: str, **kwargs: Any) -> Any:
    """A positional parameter shown by its metavar in the usage line only: typer prints
    an argument's Python type beside it (``<list[str]>``), which is no help to a user.
    The command's docstring says what the words are."""
    return typer.Argument(metavar=metavar, hidden=True, **kwargs)


# Every parameter names its metavar, so help shows LAB, NODE, SECONDS - never <str>.
LabArg = Annotated[str | None, argument("[LAB]")]
TopologyArg = Annotated[Path, argument("TOPOLOGY")]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime",
        "-r",
        metavar="RUNTIME",
        help="docker, local, swarm, hosts, or auto (docker if it answers)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
JunitOpt = Annotated[
    Path | None, typer.Option("--junit", metavar="FILE", help="also write JUnit XML here")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", metavar="SECONDS", help="seconds to wait for delivery")
]


def say(line: str) -> None:
    """Progress, dimmed, on stderr: stdout stays clean for --json."""
    err.print(f"[dim]{line}[/]", markup=True)


def attach(lab: str | None) -> Lab:
    return mxlab.Lab.attach(lab, progress=say)


def split_lab(args: list[str], usage: str, want: int = 1) -> tuple[str | None, list[str]]:
    """``[LAB] WORDS``: with one word more than the command takes, the first is the lab;
    otherwise the lab is the only one up. ``usage`` names the words for the error."""
    if len(args) == want + 1:
        return args[0], args[1:]
    if len(args) == want:
        return None, args
    raise mxlab.LabError(f"expected {usage}")
