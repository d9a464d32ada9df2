"""What a failed test's report shows about its lab: what each mailbox held, what waits in
the relays' queues, and what the nodes did during the test. Bounded: a lab with many
users or a long test never floods the report, and a broken lab (a node killed by the
test) gives one line per thing it could not read instead of an error."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mxlab.api import Lab

SECTION_CHARS = 4000
MAILBOXES = 20
PER_MAILBOX = 10
EVENTS = 40
READ_BUDGET = 15.0  # seconds spent reading mailboxes before giving up on the rest
QUIET_FIELDS = {"client", "delay", "size", "hop", "id", "uid"}


def sections(lab: Lab, since: float) -> list[tuple[str, str]]:
    """(title, text) pairs for ``report.sections``; ``since`` is when the test began. The
    trace is read first: reading the mailboxes logs logins of its own."""
    trace = _safely(lambda: _trace(lab, since))
    queues = _safely(lambda: _queues(lab))
    return [
        (f"mxlab {lab.name}: mailboxes", _safely(lambda: _mailboxes(lab))),
        (f"mxlab {lab.name}: queues", queues),
        (f"mxlab {lab.name}: trace since the test began", trace),
    ]


def bounded(text: str, limit: int = SECTION_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters)"


def _safely(render: Callable[[], str]) -> str:
    try:
        return bounded(render())
    except Exception as exc:  # the report must never hide the test's own failure
        return f"could not read: {type(exc).__name__}: {exc}"


def _mailboxes(lab: Lab) -> str:
    lines = []
    users = lab.users
    deadline = time.monotonic() + READ_BUDGET
    for user in users[:MAILBOXES]:
        if time.monotonic() > deadline:
            lines.append("... (out of time reading mailboxes)")
            break
        try:
            held = lab.mailbox(user.address).messages()
        except Exception as exc:  # the store may be down: that is worth reading too
            lines.append(f"{user.address}: could not read ({type(exc).__name__}: {exc})")
            continue
        lines.append(f"{user.address}: {len(held)} message(s)")
        if len(held) > PER_MAILBOX:
            lines.append(f"  ... {len(held) - PER_MAILBOX} older")
        for msg in held[-PER_MAILBOX:]:
            lines.append(
                f"  {str(msg['Subject'])!r} from {msg['From']} to {msg['To']}"
                f" <{str(msg['Message-ID'] or '').strip('<>')}>"
            )
    if len(users) > MAILBOXES:
        lines.append(f"... and {len(users) - MAILBOXES} more users")
    return "\n".join(lines)


def _queues(lab: Lab) -> str:
    queued = lab.queue()
    if not queued:
        return "every relay's queue is empty"
    lines = []
    for q in queued:
        lines.append(
            f"{q['node']} {q['id']} {q['state']} age {q['age']}s from <{q['sender']}>"
            f" {q['message_id']} attempts {q['attempts']}"
        )
        for r in q["recipients"]:
            reply = f": {r['reply']}" if r.get("reply") else ""
            lines.append(f"  to {r['address']} {r['state']}{reply}")
    return "\n".join(lines)


def _trace(lab: Lab, since: float) -> str:
    events = lab.events(since)
    if not events:
        return "no node logged anything"
    lines = [f"... {len(events) - EVENTS} earlier events"] if len(events) > EVENTS else []
    for e in events[-EVENTS:]:
        at = datetime.fromtimestamp(e.ts, UTC).strftime("%H:%M:%S.%f")[:-3]
        lines.append(f"{at} {e.node} {e.event} {_fields(e.fields)}")
    return "\n".join(lines)


def _fields(fields: dict[str, Any]) -> str:
    shown = (f"{k}={_short(v)}" for k, v in fields.items() if k not in QUIET_FIELDS)
    return " ".join(shown)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
