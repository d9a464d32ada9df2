"""Check results as a table, JSON, or JUnit XML (for CI systems)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mxlab.lab.checks import Result


def table(results: list[Result], console: Console) -> None:
    t = Table(title="delivery checks")
    for col in ("from", "to", "fetched by", "latency", "hops", "result"):
        t.add_column(col)
    for r in results:
        fetched = "+".join(p for p, ok in (("IMAP", r.imap), ("POP3", r.pop3)) if ok) or "-"
        latency = f"{r.latency * 1000:.0f} ms" if r.latency is not None else "-"
        hops = " > ".join(r.hops) or "-"
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


def write_junit(results: list[Result], path: Path, suite: str) -> None:
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
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
