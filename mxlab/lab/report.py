"""Check results as a table, JSON, or JUnit XML (for CI systems)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mxlab.lab.checks import Result
from mxlab.lab.scenario_run import Outcome


def table(results: list[Result], console: Console) -> None:
    t = Table(title="delivery checks")
    for col in ("from", "to", "fetched by", "latency", "hops", "result"):
        t.add_column(col)
    for r in results:
        fetched = "+".join(p for p, ok in (("IMAP", r.imap), ("POP3", r.pop3)) if ok) or "-"
        latency = f"{r.latency * 1000:.0f} ms" if r.latency is not None else "-"
        hops = " > ".join(h.split(".")[0] for h in r.hops) or "-"  # node names; JSON has FQDNs
        verdict = "[green]ok[/]" if r.ok else f"[red]FAIL[/] {_why(r)}"
        t.add_row(r.sender, r.rcpt, fetched, latency, hops, verdict)
    console.print(t)
    passed = sum(r.ok for r in results)
    console.print(f"{passed} passed, {len(results) - passed} failed")


def _why(r: Result) -> str:
    if r.error:
        return r.error
    if not r.route_ok:
        want = " > ".join("|".join(alts) for alts in r.expected)
        return f"route differs from the plan ({want})"
    return ""


def as_json(results: list[Result]) -> str:
    passed = sum(r.ok for r in results)
    return json.dumps(
        {
            "passed": passed,
            "failed": len(results) - passed,
            "results": [r.as_dict() for r in results],
        },
        indent=2,
    )


def write_junit(path: Path, *suites: ET.Element) -> None:
    """One suite as the root, several under <testsuites> (what CI systems read)."""
    if len(suites) == 1:
        root = suites[0]
    else:
        root = ET.Element("testsuites")
        root.extend(suites)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def junit_suite(results: list[Result], suite: str) -> ET.Element:
    failures = sum(not r.ok for r in results)
    root = ET.Element("testsuite", name=suite, tests=str(len(results)), failures=str(failures))
    for r in results:
        case = ET.SubElement(
            root,
            "testcase",
            classname=suite,
            name=f"{r.sender} -> {r.rcpt}",
            time=f"{r.latency or 0:.3f}",
        )
        if not r.ok:
            ET.SubElement(case, "failure", message=_why(r) or "failed")
    return root


def scenario_table(outcome: Outcome, console: Console) -> None:
    t = Table(title=f"scenario {outcome.scenario}")
    for col in ("#", "step", "result", "time", "detail"):
        t.add_column(col)
    for s in outcome.steps:
        verdict = "[green]ok[/]" if s.ok else "[red]FAIL[/]"
        t.add_row(str(s.index), s.title, verdict, f"{s.seconds:.1f}s", s.detail)
    console.print(t)
    tally = ", ".join(f"{k} {v}" for k, v in outcome.accounting.items())
    console.print(f"accounting: {tally}")
    for line in outcome.unaccounted:
        console.print(f"[red]unaccounted:[/] {line}")
    if outcome.artifacts:
        console.print(f"artifacts kept in {outcome.artifacts}")
    passed = sum(s.ok for s in outcome.steps)
    console.print(f"{passed} passed, {len(outcome.steps) - passed} failed")


def scenario_json(outcome: Outcome) -> str:
    return json.dumps(
        {
            "scenario": outcome.scenario,
            "ok": outcome.ok,
            "steps": [asdict(s) for s in outcome.steps],
            "accounting": outcome.accounting,
            "unaccounted": outcome.unaccounted,
            "artifacts": outcome.artifacts,
        },
        indent=2,
    )


def scenario_junit_suite(outcome: Outcome) -> ET.Element:
    root = ET.Element("testsuite", name=outcome.scenario, tests=str(len(outcome.steps) + 1))
    for s in outcome.steps:
        case = ET.SubElement(
            root, "testcase", classname=outcome.scenario, name=f"{s.index}: {s.title}",
            time=f"{s.seconds:.3f}",
        )  # fmt: skip
        if not s.ok:
            ET.SubElement(case, "failure", message=s.detail)
    acc = ET.SubElement(root, "testcase", classname=outcome.scenario, name="accounting")
    if outcome.unaccounted:
        ET.SubElement(acc, "failure", message="; ".join(outcome.unaccounted))
    root.set("failures", str(sum(not s.ok for s in outcome.steps) + bool(outcome.unaccounted)))
    return root
