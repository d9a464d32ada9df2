"""Hand a message to the next hop with aiosmtplib: SMTP to an MX or smarthost, LMTP
(RFC 2033) to the store. Returns one reply per recipient; classifying them is the
delivery worker's job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiosmtplib

from mxlab.nodes.relay.routing import Hop

TIMEOUT = 30.0


@dataclass(frozen=True)
class Outcome:
    reply: str  # "250 2.0.0 Ok", "451 4.4.1 connection refused", ...
    hop: str  # the host that gave it

    @property
    def kind(self) -> str:
        """delivered, deferred or bounced, by the reply's first digit."""
        return {"2": "delivered", "5": "bounced"}.get(self.reply[:1], "deferred")


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


async def send(
    hops: list[Hop],
    sender: str,
    rcpts: list[str],
    content: bytes,
    *,
    helo: str,
    mail_options: list[str],
    starttls: bool,
) -> dict[str, Outcome]:
    """Try the hops in order: a connection failure or a 4xx moves the recipients it
    concerns to the next hop (RFC 5321 §5.1); a 2xx or 5xx is final."""
    outcomes: dict[str, Outcome] = {}
    pending = list(rcpts)
    for hop in hops:
        try:
            replies = await _session(hop, sender, pending, content, helo, mail_options, starttls)
        except aiosmtplib.SMTPResponseException as exc:
            # a refused greeting or EHLO: the host is unusable, try the next one
            refused = _reply(exc.code, exc.message)
            replies = dict.fromkeys(pending, f"451 4.4.1 {hop.name} refused the session: {refused}")
        except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
            reply = f"451 4.4.1 {hop.name}: {exc.__class__.__name__}: {exc}"
            replies = dict.fromkeys(pending, reply)
        for rcpt, reply in replies.items():
            outcomes[rcpt] = Outcome(reply, hop.name)
        pending = [r for r in pending if outcomes[r].kind == "deferred"]
        if not pending:
            break
    return outcomes


async def _session(
    hop: Hop,
    sender: str,
    rcpts: list[str],
    content: bytes,
    helo: str,
    mail_options: list[str],
    starttls: bool,
) -> dict[str, str]:
    smtp = aiosmtplib.SMTP(
        hostname=hop.address,
        port=hop.port,
        local_hostname=helo,
        timeout=TIMEOUT,
        start_tls=None if starttls and not hop.lmtp else False,
        validate_certs=False,  # opportunistic TLS between lab MTAs (RFC 7435)
    )
    await smtp.connect()
    try:
        if hop.lmtp:
            # RFC 2033 §4.1: LHLO instead of EHLO; aiosmtplib parses its reply alike
            smtp.last_ehlo_response = await smtp.execute_command(b"LHLO", helo.encode())
        elif smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
        options = [o for o in mail_options if smtp.supports_extension(o.split("=")[0])]
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(content)}")
        if hop.lmtp:
            # One recipient per transaction: LMTP's per-recipient DATA replies then
            # arrive one per transaction (RFC 2033 §4.2).
            replies: dict[str, str] = {}
            for rcpt in rcpts:
                replies |= await _transaction(smtp, sender, [rcpt], content, options)
            return replies
        return await _transaction(smtp, sender, rcpts, content, options)
    finally:
        try:
            await asyncio.wait_for(smtp.quit(), 5)
        except (OSError, TimeoutError, aiosmtplib.SMTPException):
            smtp.close()


async def _transaction(
    smtp: aiosmtplib.SMTP, sender: str, rcpts: list[str], content: bytes, options: list[str]
) -> dict[str, str]:
    """MAIL, RCPT per recipient, DATA (RFC 5321 §3.3); RSET after a failure."""
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    try:
        await smtp.mail(sender, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        await smtp.rset()
        return dict.fromkeys(rcpts, _reply(exc.code, exc.message))
    replies: dict[str, str] = {}
    accepted: list[str] = []
    for rcpt in rcpts:
        try:
            await smtp.rcpt(rcpt, encoding=encoding)
            accepted.append(rcpt)
        except aiosmtplib.SMTPResponseException as exc:
            replies[rcpt] = _reply(exc.code, exc.message)
    if not accepted:
        await smtp.rset()
        return replies
    try:
        response = await smtp.data(content)
        reply = _reply(response.code, response.message)
    except aiosmtplib.SMTPResponseException as exc:
        reply = _reply(exc.code, exc.message)
        await smtp.rset()
    return replies | dict.fromkeys(accepted, reply)
