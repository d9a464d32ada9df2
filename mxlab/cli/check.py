"""`mxlab check|run`: prove delivery between every pair of users, by route."""

from __future__ import annotations

import json
from typing import Annotated

import typer

import mxlab
from mxlab.cli import render
from mxlab.cli.app import (
    JsonOpt,
    JunitOpt,
    LabArg,
    RuntimeOpt,
    TimeoutOpt,
    TopologyArg,
    app,
    attach,
    out,
    say,
)
from mxlab.lab import report

SampleOpt = Annotated[
    int | None,
    typer.Option(
        "--sample",
        metavar="K",
        help="mail each domain to K others instead of every pair of users "
        "(0: every pair; default: every pair up to 16 users, K=3 above)",
    ),
]


@app.command()
def check(
    lab: LabArg = None,
    json_out: JsonOpt = False,
    junit: JunitOpt = None,
    timeout: TimeoutOpt = 60,
    sample: SampleOpt = None,
) -> None:
    """Send mail between every pair of users and prove each arrived, by its route."""
    the_lab = attach(lab)
    _report(the_lab.check(timeout, sample), the_lab.name, json_out, junit)


@app.command()
def run(
    topology: TopologyArg,
    runtime: RuntimeOpt = "auto",
    json_out: JsonOpt = False,
    junit: JunitOpt = None,
    timeout: TimeoutOpt = 60,
    keep: Annotated[bool, typer.Option("--keep", help="leave the lab running afterwards")] = False,
    sample: SampleOpt = None,
) -> None:
    """Start a lab, prove delivery between every pair of users, tear it down."""
    lab = mxlab.Lab.up(topology, runtime, progress=say)
    try:
        result = lab.check(timeout, sample)
    finally:
        if not keep:
            lab.down()
            say(f"lab {lab.name} is down")
    _report(result, lab.name, json_out, junit)


def _report(result: mxlab.CheckReport, suite: str, json_out: bool, junit: object) -> None:
    if junit is not None:
        suites = [report.junit_suite(result.results, suite)]
        if result.declared is not None:
            suites.append(report.scenario_junit_suite(result.declared))
        report.write_junit(junit, *suites)  # type: ignore[arg-type]
    if json_out:
        doc = json.loads(report.as_json(result.results)) | {"sampled": result.sampled}
        if result.declared is not None:
            doc["checks"] = json.loads(report.scenario_json(result.declared))
        print(json.dumps(doc, indent=2))
    else:
        render.results(out, result.results, result.sampled)
        if result.declared is not None:
            render.scenario(out, result.declared)
    if not result.ok:
        raise typer.Exit(1)
