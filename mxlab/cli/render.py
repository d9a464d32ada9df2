"""Every table the CLI prints, in one place. Columns fold rather than cut, so addresses
stay whole on an 80-column terminal."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from mxlab.lab.checks import Result
from mxlab.lab.runtime import NodeStatus

WHOLE = {"from", "to", "node", "address", "queue id", "state", "role", "time"}


def _table(title: str, *columns: str) -> Table:
    """Names and addresses are never cut or folded; the other columns wrap at spaces."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        t.add_column(col, no_wrap=col in WHOLE, overflow="fold")
    return t


def _state(state: str) -> str:
    return f"[green]{state}[/]" if state == "running" else f"[red]{state}[/]"


def status(console: Console, title: str, nodes: list[NodeStatus], ports: dict[str, str]) -> None:
    t = _table(title, "node", "role", "address", "ports", "state")
    for s in nodes:
        t.add_row(s.node, s.role, s.address, ports.get(s.node, ""), _state(s.state))
    console.print(t)


def results(console: Console, rows: list[Result], sampled: int = 0) -> None:
    title = "delivery checks"
    if sampled:
        title += f" (sampled: each domain to {sampled} others; --sample 0 checks every pair)"
    t = _table(title, "from", "to", "by", "ms", "hops", "result")
    for r in rows:
        fetched = "+".join(p for p, ok in (("IMAP", r.imap), ("POP3", r.pop3)) if ok) or "-"
        latency = f"{r.latency * 1000:.0f}" if r.latency is not None else "-"
        hops = " > ".join(h.split(".")[0] for h in r.hops) or "-"  # node names; JSON has FQDNs
        verdict = "[green]ok[/]" if r.ok else f"[red]FAIL[/] {r.why}"
        t.add_row(r.sender, r.rcpt, fetched, latency, hops, verdict)
    console.print(t)
    passed = sum(r.ok for r in rows)
    console.print(f"{passed} passed, {len(rows) - passed} failed")


def scenario(console: Console, outcome: Any) -> None:
    t = _table(f"scenario {outcome.scenario}", "#", "step", "result", "time", "detail")
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


def _age(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _size(octets: int) -> str:
    return f"{octets / 1024:.1f}K" if octets >= 1024 else str(octets)


def queue(console: Console, node: str, reply: Any) -> None:
    """One relay's queue: a row per recipient, ids whole (they are copied into commands)."""
    source = "" if reply.live else " (stopped: from its queue files)"
    if not reply.messages:
        console.print(f"{node}: queue empty{source}")
        return
    pending = sum(len(e.pending()) for e in reply.messages)
    count = f"{len(reply.messages)} message(s), {pending} recipient(s) pending"
    t = _table(f"{node}: {count}{source}", "queue id", "state", "age", "size", "sender",
               "recipient", "rcpt state", "last reply")  # fmt: skip
    now = time.time()
    for env in reply.messages:
        for n, rcpt in enumerate(env.recipients):
            head = (
                [env.id, env.state, _age(now - env.arrival), _size(env.size), env.sender or "<>"]
                if n == 0
                else [""] * 5
            )
            t.add_row(*head, rcpt.address, rcpt.state, rcpt.reply)
    console.print(t)


def _hop_details(e: Any) -> str:
    """What a student reads off an event: the DNS answers that chose the route, the
    SMTP reply, why a retry is needed."""
    f = e.fields
    if e.event == "route":
        mx = f"MX {f.get('domain')}: {', '.join(f['mx'])}; " if f.get("mx") else ""
        return f"{mx}try {', '.join(f.get('hops', []))}"
    parts = [f"{k}={f[k]}" for k in ("from", "to", "client", "hop") if f.get(k)]
    if f.get("status"):
        parts.append(f"reply: {f['status']}")
    if e.event == "deferred":
        parts.append(f"retry later (attempt {f.get('attempt', '?')})")
    rest = [f"{k}={v}" for k, v in f.items() if k not in _SHOWN]
    return " ".join(parts + rest)


_SHOWN = {"message_id", "queue_id", "from", "to", "client", "hop", "status", "attempt",
          "domain", "mx", "hops", "delay"}  # fmt: skip


def trace(console: Console, message_id: str, events: list[Any]) -> None:
    """A timeline: each event's time, the delay since the one before, its node, and the
    DNS answers, SMTP replies and retries it logged; then the nodes it crossed."""
    t = _table(f"trace {message_id}", "time", "+delay", "node", "event", "details")
    before = None
    for e in events:
        when = datetime.fromtimestamp(e.ts).strftime("%H:%M:%S.%f")[:-3]
        delay = "" if before is None else f"+{e.ts - before:.3f}s"
        before = e.ts
        t.add_row(when, delay, e.node, e.event, _hop_details(e))
    console.print(t)
    path: list[str] = []  # each node once, in the order the message first reached it
    for e in events:
        if e.node not in path:
            path.append(e.node)
    console.print("path: " + " > ".join(path))
    retries = sum(e.event == "deferred" for e in events)
    if events:
        took = events[-1].ts - events[0].ts
        console.print(f"{len(events)} events over {took:.3f}s, {retries} deferral(s)")
