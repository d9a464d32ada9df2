"""Check results as JSON or JUnit XML (for CI systems); tables are the CLI's."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

from mxlab.lab.checks import Result
from mxlab.lab.scenario_run import Outcome


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
            ET.SubElement(case, "failure", message=r.why or "failed")
    return root


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
