"""The one place that talks to a lab as a mail user does: submit (587, STARTTLS, AUTH),
read a mailbox by IMAP or POP3 (STARTTLS/STLS), all verified against the lab CA.

The checks, the scenario runner and the Python API use these and nothing else, so a
lab whose nodes refuse plaintext logins (the default) is exercised the way a real
client would: TLS first, then credentials (RFC 8314 §3, RFC 3207, RFC 2595)."""

from __future__ import annotations

import functools
import imaplib
import mimetypes
import poplib
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path

from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan, UserPlan

TIMEOUT = 10.0
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.I | re.M)

# What a refused or failed conversation raises; callers turn it into one line.
MAIL_ERRORS = (
    OSError,
    smtplib.SMTPException,
    imaplib.IMAP4.error,
    poplib.error_proto,
)


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header of a message (or of its header lines)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    m = _MESSAGE_ID.search(head)
    return m.group(1).decode(errors="replace") if m else None


@functools.cache
def _context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def tls_context(plan: LabPlan) -> ssl.SSLContext:
    """Trusts the lab CA only; node certificates name each node's FQDN and address."""
    return _context(str(Path(plan.lab_dir) / "ca" / "ca.pem"))


def build_message(
    sender: str,
    rcpts: list[str],
    subject: str,
    body: str,
    attachments: Iterable[Path] = (),
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A new message with a fresh Message-ID. Header values are checked for CR/LF by the
    email package (it refuses header injection)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@mxlab.test>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    for path in attachments:
        ctype, _ = mimetypes.guess_type(path.name)
        maintype, subtype = (ctype or "application/octet-stream").split("/", 1)
        msg.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name
        )
    return msg


def recipients_of(msg: EmailMessage) -> list[str]:
    return [a.strip() for a in str(msg["To"]).split(",") if a.strip()]


def submit(
    plan: LabPlan,
    msg: EmailMessage,
    *,
    sender: str | None = None,
    rcpts: list[str] | None = None,
    timeout: float = 30.0,
) -> bytes:
    """Submit as the sender's lab user (587, STARTTLS, AUTH); return the bytes the relay
    acknowledged. A refusal raises ``smtplib.SMTPException`` with the server's reply."""
    user = plan.user(sender or str(msg["From"]))
    relay = plan.nodes[user.submission]
    data = msg.as_bytes()
    with smtplib.SMTP(relay.address, relay.ports["submission"], timeout=timeout) as smtp:
        smtp.ehlo("client.mxlab.test")
        smtp.starttls(context=tls_context(plan))  # RFC 3207: before AUTH
        smtp.ehlo("client.mxlab.test")
        smtp.login(user.address, user.password)
        refused = smtp.sendmail(user.address, rcpts or recipients_of(msg), data)
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)
    return data


def smtp_session(plan: LabPlan, node: str, port: str, timeout: float = TIMEOUT) -> smtplib.SMTP:
    """An SMTP session to a node, STARTTLS done when the node offers it; the caller says
    EHLO again, authenticates or not, and speaks."""
    relay = plan.nodes[node]
    smtp = smtplib.SMTP(relay.address, relay.ports[port], timeout=timeout)
    smtp.ehlo("client.mxlab.test")
    if smtp.has_extn("starttls"):
        smtp.starttls(context=tls_context(plan))
        smtp.ehlo("client.mxlab.test")
    return smtp


def _store_of(plan: LabPlan, address: str) -> tuple[UserPlan, str, dict[str, int]]:
    try:
        user = plan.user(address)
    except KeyError:
        raise LabError(f"{address} is not a user of lab {plan.lab}") from None
    store = plan.nodes[user.store]
    return user, store.address, store.ports


def imap_session(plan: LabPlan, address: str, timeout: float = TIMEOUT) -> imaplib.IMAP4:
    """A logged-in IMAP session of the user (STARTTLS first, RFC 3501 §6.2.1)."""
    user, host, ports = _store_of(plan, address)
    imap = imaplib.IMAP4(host, ports["imap"], timeout=timeout)
    try:
        imap.starttls(ssl_context=tls_context(plan))
        imap.login(user.address, user.password)
    except BaseException:
        imap.shutdown()
        raise
    return imap


def imap_messages(plan: LabPlan, address: str, folder: str = "INBOX") -> list[bytes]:
    """Every message in the folder, oldest first, in one read-only FETCH."""
    imap = imap_session(plan, address)
    try:
        typ, count = imap.select(_quote(folder), readonly=True)
        if typ != "OK":
            raise LabError(f"{address}: no folder {folder!r}")
        if int(count[0] or 0) == 0:
            return []
        _, parts = imap.fetch("1:*", "(BODY.PEEK[])")
        return [p[1] for p in parts if isinstance(p, tuple)]
    finally:
        imap.logout()


def imap_by_message_id(plan: LabPlan, address: str, message_ids: list[str]) -> dict[str, bytes]:
    """The messages among ``message_ids`` now in the user's INBOX (SEARCH HEADER)."""
    found: dict[str, bytes] = {}
    imap = imap_session(plan, address)
    try:
        imap.select("INBOX", readonly=True)
        for mid in message_ids:
            typ, data = imap.search(None, "HEADER", "Message-ID", mid)
            nums = data[0].split() if typ == "OK" and data[0] else []
            if nums:
                typ, parts = imap.fetch(nums[0], "(BODY.PEEK[])")
                if typ == "OK" and isinstance(parts[0], tuple):
                    found[mid] = parts[0][1]
    finally:
        imap.logout()
    return found


def pop3_by_message_id(plan: LabPlan, address: str, message_ids: list[str]) -> dict[str, bytes]:
    """The same by POP3 (STLS, RFC 2595 §4): scan headers with TOP, RETR the wanted ones."""
    user, host, ports = _store_of(plan, address)
    wanted = {m.lower() for m in message_ids}
    found: dict[str, bytes] = {}
    pop = poplib.POP3(host, ports["pop3"], timeout=TIMEOUT)
    try:
        pop.stls(context=tls_context(plan))
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


def _quote(folder: str) -> str:
    """A mailbox name as an IMAP quoted string (RFC 3501 §4.3)."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
