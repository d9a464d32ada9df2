"""Hand a message to the next hop with aiosmtplib: SMTP to an MX or smarthost, LMTP
(RFC 2033) to the store. Returns one reply per recipient; classifying them is the
delivery worker's job."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib

from mxlab.nodes.delivery_id import QUEUE_ID_EXTENSION
from mxlab.nodes.relay.routing import Hop
from mxlab.nodes.relay.sessions import SessionCache, quit_session

TIMEOUT = 30.0


@dataclass(frozen=True)
class DsnParams:
    """RFC 3461 parameters as they go on the wire: RET/ENVID, and NOTIFY/ORCPT by
    recipient."""

    mail: list[str] = field(default_factory=list)
    rcpt: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    reply: str  # "250 2.0.0 Ok", "451 4.4.1 connection refused", ...
    hop: str  # the host that gave it
    dsn_passed: bool = False  # the hop took our DSN requests on (RFC 3461 §6.2.1)
    lmtp: bool = False  # the hop was the final delivery agent

    @property
    def kind(self) -> str:
        """delivered, deferred or bounced, by the reply's first digit."""
        return {"2": "delivered", "5": "bounced"}.get(self.reply[:1], "deferred")


@dataclass(frozen=True)
class Transfer:
    """What one delivery attempt sends, whatever the hop."""

    sender: str
    content: bytes
    mail_options: list[str]  # BODY=8BITMIME, SMTPUTF8: offered where the hop supports them
    dsn: DsnParams
    queue_id: str = ""  # told to a store that advertises XQUEUEID, for exactly once


@dataclass(frozen=True)
class ClientIdentity:
    helo: str  # our FQDN, for EHLO/LHLO
    source: str  # our address: the next relay trusts that one, not 127.0.0.1
    tls: ssl.SSLContext | None  # for opportunistic STARTTLS (RFC 3207) where offered


def opportunistic_tls() -> ssl.SSLContext:
    """Encrypt, don't authenticate (RFC 7435), as MTAs do without DANE or MTA-STS.
    Built once: aiosmtplib's default loads the system CA store on every session,
    ~65 ms of CPU per hop."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


async def send(
    hops: list[Hop],
    rcpts: list[str],
    transfer: Transfer,
    me: ClientIdentity,
    cache: SessionCache,
    on_delivered: Callable[[dict[str, Outcome]], None],
) -> dict[str, Outcome]:
    """Try the hops in order: a connection failure or a 4xx moves the recipients it
    concerns to the next hop (RFC 5321 §5.1); a 2xx or 5xx is final. ``on_delivered``
    hears of each accepted recipient as its reply arrives, before QUIT."""
    outcomes: dict[str, Outcome] = {}
    pending = list(rcpts)
    for hop in hops:

        def confirmed(replies: dict[str, str], dsn_passed: bool, hop: Hop = hop) -> None:
            accepted = {
                r: Outcome(reply, hop.name, dsn_passed, hop.lmtp)
                for r, reply in replies.items()
                if reply.startswith("2")
            }
            if accepted:
                on_delivered(accepted)

        dsn_passed = False
        try:
            replies, dsn_passed = await _session(hop, pending, transfer, me, cache, confirmed)
        except aiosmtplib.SMTPResponseException as exc:
            # a refused greeting or EHLO: the host is unusable, try the next one
            refused = _reply(exc.code, exc.message)
            replies = dict.fromkeys(pending, f"451 4.4.1 {hop.name} refused the session: {refused}")
        except UnicodeEncodeError:  # an SMTPUTF8 address, a hop without SMTPUTF8
            reply = f"553 5.6.7 {hop.name} does not support SMTPUTF8 (RFC 6531 §3.2)"
            replies = dict.fromkeys(pending, reply)
        except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
            reply = f"451 4.4.1 {hop.name}: {exc.__class__.__name__}: {exc}"
            replies = dict.fromkeys(pending, reply)
        for rcpt, reply in replies.items():
            outcomes[rcpt] = Outcome(reply, hop.name, dsn_passed, hop.lmtp)
        pending = [r for r in pending if outcomes[r].kind == "deferred"]
        if not pending:
            break
    return outcomes


async def _open(hop: Hop, me: ClientIdentity) -> aiosmtplib.SMTP:
    """Connect, read the greeting, EHLO (STARTTLS where offered) or LHLO."""
    smtp = aiosmtplib.SMTP(
        hostname=hop.address,
        port=hop.port,
        local_hostname=me.helo,
        source_address=(me.source, 0),
        timeout=TIMEOUT,
        start_tls=None if me.tls and not hop.lmtp else False,
        tls_context=me.tls,
    )
    await smtp.connect()
    try:
        if hop.lmtp:
            # RFC 2033 §4.1: LHLO instead of EHLO; aiosmtplib parses its reply alike
            smtp.last_ehlo_response = await smtp.execute_command(b"LHLO", me.helo.encode())
        elif smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
    except BaseException:
        await quit_session(smtp)
        raise
    return smtp


async def _session(
    hop: Hop,
    rcpts: list[str],
    transfer: Transfer,
    me: ClientIdentity,
    cache: SessionCache,
    confirmed: Callable[[dict[str, str], bool], None],
) -> tuple[dict[str, str], bool]:
    """One session, cached or new: per-recipient replies, and whether DSN requests
    went along; ``confirmed`` gets each transaction's replies as soon as they are in."""
    key = (hop.address, hop.port)
    smtp = cache.take(key)
    if smtp is not None:
        try:
            return await _on_session(smtp, hop, rcpts, transfer, cache, confirmed)
        except _StaleSession:
            pass  # the server dropped our idle session: nothing was sent, go anew
    try:
        return await _on_session(await _open(hop, me), hop, rcpts, transfer, cache, confirmed)
    except _StaleSession as exc:
        raise aiosmtplib.SMTPServerDisconnected(str(exc.__cause__)) from None


class _StaleSession(Exception):
    """The session broke before MAIL was answered: no message is at stake."""


async def _on_session(
    smtp: aiosmtplib.SMTP,
    hop: Hop,
    rcpts: list[str],
    transfer: Transfer,
    cache: SessionCache,
    confirmed: Callable[[dict[str, str], bool], None],
) -> tuple[dict[str, str], bool]:
    reusable = False
    try:
        options = [o for o in transfer.mail_options if smtp.supports_extension(o.split("=")[0])]
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(transfer.content)}")  # RFC 1870 §6
        # RFC 3461 §6.2.1: pass the DSN requests on to a relay that supports them;
        # behind LMTP is final delivery, which we report ourselves
        dsn_passed = smtp.supports_extension("dsn") and not hop.lmtp
        if dsn_passed:
            options += transfer.dsn.mail
        per_rcpt = transfer.dsn.rcpt if dsn_passed else {}
        if hop.lmtp and transfer.queue_id and smtp.supports_extension(QUEUE_ID_EXTENSION):
            # the store records (queue id, recipient) with each copy it keeps, so a
            # copy sent again after we died before reading its 250 is not kept twice
            options.append(f"{QUEUE_ID_EXTENSION}={transfer.queue_id}")
        # LMTP: one recipient per transaction, so its per-recipient DATA replies
        # arrive one per transaction (RFC 2033 §4.2).
        batches = [[r] for r in rcpts] if hop.lmtp else [rcpts]
        replies: dict[str, str] = {}
        for n, batch in enumerate(batches):
            try:
                got = await _transaction(smtp, batch, transfer, options, per_rcpt)
            except _StaleSession as exc:
                if n == 0:
                    raise
                raise aiosmtplib.SMTPServerDisconnected(str(exc.__cause__)) from None
            confirmed(got, dsn_passed)
            replies |= got
        reusable = smtp.is_connected
        return replies, dsn_passed
    finally:
        if reusable:
            cache.give((hop.address, hop.port), smtp)
        else:
            await quit_session(smtp)


def _path(address: str, encoding: str) -> bytes:
    """The reverse- or forward-path as received (RFC 5321 §4.1.2), not re-parsed:
    a quoted local part travels unchanged."""
    return b"<" + address.encode(encoding) + b">"


async def _command(smtp: aiosmtplib.SMTP, verb: bytes, arg: bytes, options: list[str]) -> str:
    """One command; its reply as "code text". aiosmtplib refuses CR/LF in ``arg``."""
    response = await smtp.execute_command(verb, arg, *(o.encode("ascii") for o in options))
    return _reply(response.code, response.message)


async def _transaction(
    smtp: aiosmtplib.SMTP,
    rcpts: list[str],
    transfer: Transfer,
    options: list[str],
    rcpt_options: dict[str, list[str]],
) -> dict[str, str]:
    """MAIL, RCPT per recipient, DATA (RFC 5321 §3.3); RSET after a failure."""
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    try:
        reply = await _command(smtp, b"MAIL", b"FROM:" + _path(transfer.sender, encoding), options)
    except aiosmtplib.SMTPServerDisconnected as exc:
        raise _StaleSession from exc  # dropped before any data: safe to try again
    if not reply.startswith("2"):
        await smtp.rset()
        return dict.fromkeys(rcpts, reply)
    replies: dict[str, str] = {}
    accepted: list[str] = []
    for rcpt in rcpts:
        reply = await _command(
            smtp, b"RCPT", b"TO:" + _path(rcpt, encoding), rcpt_options.get(rcpt, [])
        )
        if reply.startswith("2"):
            accepted.append(rcpt)
        else:
            replies[rcpt] = reply
    if not accepted:
        await smtp.rset()
        return replies
    try:
        response = await smtp.data(transfer.content)
        reply = _reply(response.code, response.message)
    except aiosmtplib.SMTPResponseException as exc:
        reply = _reply(exc.code, exc.message)
        await smtp.rset()
    return replies | dict.fromkeys(accepted, reply)
