"""Prove delivery: submit tagged mail, fetch it back by IMAP and POP3, compare bytes and
the ``Received:`` chain with the route the plan predicts."""

from __future__ import annotations

import imaplib
import mimetypes
import poplib
import re
import smtplib
import time
import uuid
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path

from mxlab.lab.plan import LabPlan, predict_route

_TRACE = re.compile(rb"^(received|return-path|delivered-to):", re.I)
_BY = re.compile(rb"\bby\s+([^\s;()]+)", re.I)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.I | re.M)


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header of a message (or of its header lines)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    m = _MESSAGE_ID.search(head)
    return m.group(1).decode(errors="replace") if m else None


@dataclass
class Result:
    sender: str
    rcpt: str
    message_id: str
    expected: list[list[str]]
    imap: bool = False
    pop3: bool = False
    bytes_equal: bool = False
    latency: float | None = None  # seconds from 250 to first IMAP sight
    hops: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def route_ok(self) -> bool:
        return len(self.hops) == len(self.expected) and all(
            h in alts for h, alts in zip(self.hops, self.expected, strict=True)
        )

    @property
    def ok(self) -> bool:
        return self.imap and self.pop3 and self.bytes_equal and self.route_ok and not self.error

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"route_ok": self.route_ok, "ok": self.ok}


def split_trace(raw: bytes) -> tuple[list[str], bytes]:
    """Peel the trace headers a delivery prepended (RFC 5321 §4.4); return the hosts of
    each ``Received: by``, oldest first, and the message as it was submitted."""
    lines = raw.split(b"\r\n")
    hosts: list[str] = []
    i = 0
    while i < len(lines) and _TRACE.match(lines[i]):
        header = lines[i]
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            header += b" " + lines[i].strip()
            i += 1
        if header[:9].lower() == b"received:":
            m = _BY.search(header)
            hosts.append(m.group(1).decode().lower().rstrip(".") if m else "?")
    return list(reversed(hosts)), b"\r\n".join(lines[i:])


def build_message(
    sender: str,
    rcpts: list[str],
    subject: str,
    body: str,
    attachments: list[Path] = (),  # type: ignore[assignment]
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@mxlab.test>"
    msg.set_content(body)
    for path in attachments:
        ctype, _ = mimetypes.guess_type(path.name)
        maintype, subtype = (ctype or "application/octet-stream").split("/", 1)
        msg.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name
        )
    return msg


def submit(plan: LabPlan, msg: EmailMessage, timeout: float = 30.0) -> bytes:
    """Submit as the sender's user (port 587, AUTH); return the bytes the relay accepted."""
    sender = msg["From"]
    user = plan.user(sender)
    relay = plan.nodes[user.submission]
    data = msg.as_bytes()
    with smtplib.SMTP(relay.address, relay.ports["submission"], timeout=timeout) as smtp:
        smtp.ehlo("checker.mxlab.test")
        smtp.login(user.address, user.password)
        rcpts = [a.strip() for a in msg["To"].split(",")]
        smtp.sendmail(sender, rcpts, data)
    return data


def imap_fetch(plan: LabPlan, rcpt: str, message_ids: list[str]) -> dict[str, bytes]:
    """The messages among ``message_ids`` now in the recipient's INBOX, by IMAP."""
    user = plan.user(rcpt)
    store = plan.nodes[user.store]
    found: dict[str, bytes] = {}
    with imaplib.IMAP4(store.address, store.ports["imap"], timeout=10) as imap:
        imap.login(user.address, user.password)
        imap.select("INBOX", readonly=True)
        for mid in message_ids:
            typ, data = imap.search(None, "HEADER", "Message-ID", mid)
            nums = data[0].split() if typ == "OK" and data[0] else []
            if nums:
                typ, parts = imap.fetch(nums[0], "(BODY.PEEK[])")
                if typ == "OK" and isinstance(parts[0], tuple):
                    found[mid] = parts[0][1]
        imap.logout()
    return found


def pop3_fetch(plan: LabPlan, rcpt: str, message_ids: list[str]) -> dict[str, bytes]:
    """The same by POP3: scan headers with TOP, RETR the ones we look for."""
    user = plan.user(rcpt)
    store = plan.nodes[user.store]
    wanted = {m.lower() for m in message_ids}
    found: dict[str, bytes] = {}
    pop = poplib.POP3(store.address, store.ports["pop3"], timeout=10)
    try:
        pop.user(user.address)
        pop.pass_(user.password)
        count, _ = pop.stat()
        for n in range(1, count + 1):
            _, head, _ = pop.top(n, 0)
            mid = message_id_of(b"\r\n".join(head))
            if mid and mid.lower() in wanted:
                _, lines, _ = pop.retr(n)
                found[mid] = b"\r\n".join(lines) + b"\r\n"
    finally:
        pop.quit()
    return found


def check_pairs(plan: LabPlan, deadline: float = 60.0) -> list[Result]:
    """Mail between every ordered pair of distinct users, then fetch each back."""
    users = [u.address for u in plan.users]
    results: list[Result] = []
    sent: dict[str, bytes] = {}
    submitted_at: dict[str, float] = {}
    for sender in users:
        for rcpt in users:
            if rcpt == sender:
                continue
            expected = [sorted(alts) for alts in predict_route(plan, sender, rcpt)]
            msg = build_message(sender, [rcpt], f"mxlab check {sender} -> {rcpt}", _BODY)
            res = Result(sender, rcpt, msg["Message-ID"], expected)
            try:
                sent[res.message_id] = submit(plan, msg)
                submitted_at[res.message_id] = time.monotonic()
            except (OSError, smtplib.SMTPException) as exc:
                res.error = f"submission failed: {exc}"
            results.append(res)
    collect(plan, results, sent, submitted_at, time.monotonic() + deadline)
    return results


def collect(
    plan: LabPlan,
    results: list[Result],
    sent: dict[str, bytes],
    submitted_at: dict[str, float],
    deadline: float,
) -> None:
    """Poll IMAP until every submitted message is seen or the deadline passes, then
    fetch each by POP3 too and judge bytes and route."""
    pending = [r for r in results if r.message_id in sent]
    by_rcpt: dict[str, list[Result]] = {}
    for r in pending:
        by_rcpt.setdefault(r.rcpt, []).append(r)
    fetched: dict[str, bytes] = {}
    while True:
        for rcpt, rs in by_rcpt.items():
            want = [r.message_id for r in rs if r.message_id not in fetched]
            if not want:
                continue
            try:
                got = imap_fetch(plan, rcpt, want)
            except (OSError, imaplib.IMAP4.error):
                continue  # the store may be restarting; poll again
            now = time.monotonic()
            for r in rs:
                if r.message_id in got:
                    fetched[r.message_id] = got[r.message_id]
                    r.imap = True
                    r.latency = now - submitted_at[r.message_id]
        if all(r.message_id in fetched for r in pending) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for rcpt, rs in by_rcpt.items():
        try:
            popped = pop3_fetch(plan, rcpt, [r.message_id for r in rs])
        except (OSError, poplib.error_proto) as exc:
            for r in rs:
                r.error = r.error or f"POP3: {exc}"
            popped = {}
        for r in rs:
            raw = fetched.get(r.message_id)
            if raw is None:
                r.error = r.error or "not delivered before the deadline"
                continue
            r.hops, body = split_trace(raw)
            r.bytes_equal = body == sent[r.message_id]
            pop_raw = popped.get(r.message_id)
            r.pop3 = pop_raw is not None and split_trace(pop_raw)[1] == sent[r.message_id]
            if not r.bytes_equal:
                r.error = r.error or "IMAP copy differs from what was submitted"
            elif not r.pop3:
                r.error = r.error or "POP3 copy missing or different"


_BODY = (
    "This message was sent by mxlab to prove delivery across the lab.\n"
    "Line with a leading dot follows:\n.hidden?\n"
    "Non-ASCII: gr\u00fc\u00dfe, \u65e5\u672c\n"
)
