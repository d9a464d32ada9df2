"""`mxlab scenario run`: fault steps and checks on a lab, every message accounted for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import mxlab
from mxlab.cli import render
from mxlab.cli.app import JsonOpt, JunitOpt, app, argument, out, say
from mxlab.lab import report
from mxlab.lab.kinds.swap import parse_kinds

scenario_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Fault scenarios with checks."
)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("run")
def run(
    file: Annotated[Path, argument("SCENARIO")],
    runtime: Annotated[
        str | None, typer.Option("--runtime", "-r", metavar="RUNTIME", help="docker or local")
    ] = None,
    json_out: JsonOpt = False,
    junit: JunitOpt = None,
    artifacts: Annotated[
        Path, typer.Option(metavar="DIR", help="where a failed run keeps its lab")
    ] = Path("mxlab-artifacts"),
    kinds: Annotated[
        str | None,
        typer.Option(
            metavar="KIND=KIND,...",
            help="run other software in the same roles: relay=postfix,store=dovecot (or real)",
        ),
    ] = None,
) -> None:
    """Bring up the scenario's lab, run its steps and checks, account for every message."""
    swap = parse_kinds(kinds) if kinds else None
    outcome = mxlab.run_scenario(file, runtime, say, artifacts, swap)
    if junit is not None:
        report.write_junit(junit, report.scenario_junit_suite(outcome))
    if json_out:
        print(report.scenario_json(outcome))
    else:
        render.scenario(out, outcome)
    if not outcome.ok:
        raise typer.Exit(1)
