"""Follow one message across the lab from the nodes' structured log lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mxlab.lab import kinds
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime import Runtime


@dataclass(frozen=True)
class Event:
    ts: float
    node: str
    event: str
    fields: dict[str, Any]


def _log_lines(plan: LabPlan, runtime: Runtime) -> list[dict[str, Any]]:
    """Every event of every node's log, as its kind reads it (ours log JSON lines,
    Postfix and Dovecot their own log formats)."""
    lines: list[dict[str, Any]] = []
    for name, node in plan.nodes.items():
        kind = kinds.get(node.kind)
        if kind.runs:  # an external node's log is not ours to read
            lines += kind.events(node, runtime.log_bytes(plan, name))
    return lines


def _event(line: dict[str, Any]) -> Event:
    return Event(
        line.get("ts", 0),
        line.get("node", "?"),
        line["event"],
        {k: v for k, v in line.items() if k not in ("ts", "node", "event")},
    )


def events_since(plan: LabPlan, runtime: Runtime, since: float) -> list[Event]:
    """Every node's events logged at or after ``since`` (a time.time()), oldest first."""
    found = [line for line in _log_lines(plan, runtime) if line.get("ts", 0) >= since]
    found.sort(key=lambda line: line.get("ts", 0))
    return [_event(line) for line in found]


def events_for(plan: LabPlan, runtime: Runtime, message_id: str) -> list[Event]:
    """Every event of every node that names the Message-ID or one of its queue ids,
    oldest first: a relay logs the queue id on later events, so follow those too."""
    wanted = message_id.strip().strip("<>").lower()
    lines = _log_lines(plan, runtime)
    ids = set()
    for line in lines:
        mid = str(line.get("message_id", "")).strip("<>").lower()
        if mid == wanted and line.get("queue_id"):
            ids.add((line["node"], line["queue_id"]))
    found = [
        line
        for line in lines
        if str(line.get("message_id", "")).strip("<>").lower() == wanted
        or (line.get("node"), line.get("queue_id")) in ids
    ]
    found.sort(key=lambda line: line.get("ts", 0))
    return [_event(line) for line in found]
