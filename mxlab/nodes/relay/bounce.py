"""Delivery status notifications (RFC 3464): failures, and the delay and success
notices a sender may ask for (RFC 3461)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid

from mxlab.nodes.message import header_block
from mxlab.nodes.relay.queue import Envelope, Recipient
from mxlab.nodes.relay.transport import DsnParams

_ENHANCED = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CRLF = policy.compat32.clone(linesep="\r\n")
EXPIRED = "4.4.7"  # RFC 3463: delivery time expired


def status_code(reply: str) -> str:
    """The RFC 3463 status of a reply: its enhanced code, else X.0.0 from its class."""
    m = _ENHANCED.match(reply)
    if m:
        return m.group(1)
    return f"{reply[:1] if reply[:1] in '245' else '5'}.0.0"


_NOTIFY_FOR = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
}
_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}


def wants_notice(rcpt: Recipient, action: str) -> bool:
    """RFC 3461 §4.1: without NOTIFY, failures and delays are reported (the MTA's
    choice); NEVER means no notice at all; otherwise exactly what was asked."""
    if not rcpt.notify:
        return action in ("failed", "delayed")
    return _NOTIFY_FOR[action] in rcpt.notify


def wire_params(env: Envelope, rcpts: list[Recipient]) -> DsnParams:
    """The RFC 3461 parameters to pass on to a next hop that supports DSN."""
    mail = [f"RET={env.ret}"] if env.ret else []
    mail += [f"ENVID={env.envid}"] if env.envid else []
    per_rcpt = {}
    for r in rcpts:
        options = [f"NOTIFY={','.join(r.notify)}"] if r.notify else []
        per_rcpt[r.address] = options + ([f"ORCPT={r.orcpt}"] if r.orcpt else [])
    return DsnParams(mail=mail, rcpt=per_rcpt)


def _text(text: str, subtype: str) -> MIMEText:
    """7bit when the text allows it, so a person can read the bounce as it is."""
    return MIMEText(text, subtype, "us-ascii" if text.isascii() else "utf-8")


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def build_dsn(
    env: Envelope,
    reports: list[tuple[Recipient, str, str]],
    content: bytes,
    *,
    reporting_mta: str,
    now: datetime | None = None,
) -> bytes:
    """A multipart/report (RFC 6522) for ``reports`` = [(recipient, action, status)],
    returning the headers only unless the sender asked RET=FULL (RFC 3461 §4.3)."""
    now = now or datetime.now(UTC)
    actions = {action for _, action, _ in reports}
    worst = next(a for a in ("failed", "delayed", "delivered", "relayed") if a in actions)
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    lines += [f"<{r.address}>: {action}: {r.reply}" for r, action, _ in reports]
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = env.sender
    report["Subject"] = _SUBJECTS[worst]
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    report.attach(_text("\n".join(lines) + "\n", "plain"))
    status = Message()
    status["Content-Type"] = "message/delivery-status"
    # RFC 3464 §2.2: per-message fields, then §2.3: one block per recipient
    per_message = [("Reporting-MTA", f"dns; {reporting_mta}")]
    if env.envid:
        per_message.append(("Original-Envelope-Id", env.envid))
    arrival = format_datetime(datetime.fromtimestamp(env.arrival, UTC))
    per_message.append(("Arrival-Date", arrival))
    status.attach(_fields(per_message))
    for rcpt, action, code in reports:
        block = [("Final-Recipient", f"rfc822; {rcpt.address}")]
        if rcpt.orcpt:
            block.append(("Original-Recipient", rcpt.orcpt))
        block += [("Action", action), ("Status", code)]
        if rcpt.hop:
            block.append(("Remote-MTA", f"dns; {rcpt.hop}"))
        block.append(("Diagnostic-Code", f"smtp; {rcpt.reply}"))
        block.append(("Last-Attempt-Date", format_datetime(now)))
        status.attach(_fields(block))
    report.attach(status)
    if env.ret == "FULL":
        report.attach(MIMEMessage(BytesParser().parsebytes(content)))
    else:
        headers = header_block(content).decode("utf-8", "replace")
        report.attach(_text(headers, "rfc822-headers"))
    return report.as_bytes(policy=_CRLF)
