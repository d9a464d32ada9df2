"""The SMTP side of the relay: aiosmtpd does the protocol, our handler hooks add the
relay policy (RCPT), loop and smuggling checks and durable queueing (DATA)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.login_limits import LoginThrottle
from mxlab.nodes.mailauth.inbound import on_receive
from mxlab.nodes.message import message_id
from mxlab.nodes.passwords import verify_password
from mxlab.nodes.relay.dedupe import DuplicateFilter
from mxlab.nodes.relay.esmtp import (
    QUEUE_UNAVAILABLE,
    ConnectionBudget,
    RelayEnvelope,
    RelaySMTP,
)
from mxlab.nodes.relay.policy import address_error, rcpt_verdict, sender_verdict
from mxlab.nodes.relay.queue import Envelope as QueuedEnvelope
from mxlab.nodes.relay.queue import Queue, Recipient, Spool, new_queue_id
from mxlab.nodes.relay.trace import (
    LineCheck,
    count_received,
    protocol_name,
    received_header,
)
from mxlab.nodes.smtp_session import client_ip

# added to aiosmtpd's SIZE, 8BITMIME, SMTPUTF8, STARTTLS and AUTH; see esmtp.py
_EXTENSIONS = ("PIPELINING", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING")
# MAIL parameters worth carrying to the next hop (RFC 6152, RFC 6531)
_FORWARDED_MAIL_OPTIONS = ("BODY=8BITMIME", "SMTPUTF8")
HEAD = 1 << 16  # bytes of a message kept for its header checks (Received count, Message-ID)


def null_to_empty(path: str) -> str:
    """aiosmtpd reports the null reverse-path as "<>"; the queue stores it as ""."""
    return "" if path == "<>" else path


def _recipient(address: str, dsn: dict[str, str]) -> Recipient:
    notify = dsn.get("NOTIFY", "").upper()
    return Recipient(
        address=address, notify=notify.split(",") if notify else [], orcpt=dsn.get("ORCPT", "")
    )


class Incoming:
    """A message as it is received: spooled to the queue block by block behind our
    trace header, checked and digested on the way, so no step needs it whole in
    memory. The DATA hook then reads the verdicts off it."""

    def __init__(self, spool: Spool, trace: bytes, sender: str, started: float) -> None:
        self.spool = spool
        self.trace = trace
        self.qid = spool.qid
        self.sender = sender
        self.started = started
        self.size = 0  # bytes as received, without our trace header
        self.head = b""  # the first HEAD bytes: the header section, as far as checked
        self.lines = LineCheck()
        self.failed: OSError | None = None  # a spool write failed: the message is lost
        self._digest = DuplicateFilter.hasher(sender)
        spool.write(trace)

    def content(self) -> bytes:
        """The message as received, whole, for a step that needs it so (mail
        authentication): from memory when small, else read back from the spool."""
        return self.spool.read()[len(self.trace) :]

    def replace(self, content: bytes) -> None:
        """Queue ``content`` instead of what was received (headers added, a footer)."""
        self.spool.discard()
        self.spool = Spool(self.spool.root, self.qid)
        self.spool.write(self.trace + content)

    def write(self, block: bytes) -> None:
        if self.failed is None:
            try:
                self.spool.write(block)
            except OSError as exc:  # the disk is full: read on, answer 451 at the end
                self.failed = exc
                self.spool.discard()
        self.lines.feed(block)
        self._digest.update(block)
        if len(self.head) < HEAD:
            self.head += block[: HEAD - len(self.head)]
        self.size += len(block)

    def discard(self) -> None:
        self.spool.discard()

    def refusal(self, max_received: int) -> str | None:
        """Why the message as a whole is refused, or None (RFC 5321 §2.3.8,
        §4.5.3.1.6, §6.3)."""
        self.lines.close()
        if self.lines.bare:
            return "550 5.6.0 bare CR or LF in message data (RFC 5321 §2.3.8)"
        if self.lines.too_long:
            return "500 5.5.2 line too long (RFC 5321 §4.5.3.1.6)"
        if count_received(self.head) > max_received:
            return "554 5.4.6 too many Received headers: mail loop detected"
        if self.failed is not None:
            return QUEUE_UNAVAILABLE
        return None

    def digest(self) -> str:
        """The duplicate filter's key: sender and content as received."""
        return self._digest.hexdigest()


class Acceptor(Protocol):
    """Where a received message goes: the delivery worker in this process, or the
    hand-over to the delivery process (``queue.delivery_process``)."""

    def accept(
        self,
        env: QueuedEnvelope,
        spool: Spool,
        queued: Callable[[], None],
        *,
        dot_lines: bool = True,
    ) -> asyncio.Task[None]: ...


class RelayHandler:
    """aiosmtpd handler for one listener: MX (port 25) or submission (port 587)."""

    def __init__(
        self,
        config: RelayNodeConfig,
        queue: Queue,
        delivery: Acceptor,
        duplicates: DuplicateFilter,
        throttle: LoginThrottle,
        *,
        submission: bool,
    ) -> None:
        self.config = config
        self.queue = queue
        self.delivery = delivery
        self.duplicates = duplicates
        self.throttle = throttle  # the node's, shared by its listeners
        self.submission = submission

    def authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        """AUTH PLAIN / LOGIN (RFC 4954, RFC 4616) against the scrypt hashes."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        stored = self.config.auth_users.get(login) or self.config.auth_users.get(login.lower())
        ok = stored is not None and verify_password(
            stored, auth_data.password.decode("utf-8", "replace")
        )
        emit(self.config.node, "auth", user=login, ok=ok, client=client_ip(session))
        if not ok and isinstance(server, RelaySMTP):  # answered late; hung up at the cap
            if server.login is None:
                server.login = self.throttle.attempts(client_ip(session))
            server.login_hold = server.login.failed()
        return AuthResult(success=ok, handled=False, auth_data=login.lower() if ok else None)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses[1:-1] if self.submission or not r.startswith("250-AUTH")]
        return [responses[0], *lines, *(f"250-{e}" for e in _EXTENSIONS), "250 HELP"]

    async def handle_MAIL(
        self,
        server: RelaySMTP,
        session: Session,
        envelope: RelayEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        refusal = address_error(address, smtputf8=envelope.smtp_utf8) or sender_verdict(
            self.config, address, session.auth_data if session.authenticated else None
        )
        if refusal is not None:
            emit(self.config.node, "sender_refused", **{"from": address}, client=client_ip(session))
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.dsn_mail = server.pending_dsn
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: RelaySMTP,
        session: Session,
        envelope: RelayEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = address_error(address, smtputf8=envelope.smtp_utf8) or rcpt_verdict(
            self.config,
            address,
            authenticated=bool(session.authenticated),
            client_ip=client_ip(session),
        )
        if refusal is not None:
            emit(self.config.node, "rcpt_refused", to=address, client=client_ip(session))
            return refusal
        if address.lower() not in {a.lower() for a in envelope.rcpt_tos}:  # one copy each
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            envelope.dsn_rcpt[address] = server.pending_dsn
        return "250 2.1.5 Ok"

    def incoming(self, session: Session, envelope: RelayEnvelope) -> Incoming:
        """Called by RelaySMTP when the data begins: a spool file in the queue, our
        Received header (RFC 5321 §4.4) first."""
        qid = new_queue_id()
        trace = received_header(
            helo=session.host_name or "unknown",
            client_ip=client_ip(session),
            by=self.config.fqdn,
            protocol=protocol_name(
                esmtp=session.extended_smtp,
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            ),
            queue_id=qid,
            rcpts=envelope.rcpt_tos,
        )
        sender = null_to_empty(envelope.mail_from or "")
        return Incoming(self.queue.spool(qid), trace, sender, time.time())

    async def handle_DATA(
        self, server: RelaySMTP, session: Session, envelope: RelayEnvelope
    ) -> str:
        """The data has ended: check the message, then queue it durably before 250."""
        message = envelope.incoming
        assert isinstance(message, Incoming)  # made by incoming() when the data began
        refusal = message.refusal(self.config.max_received_headers)
        if refusal is not None:
            if message.failed is not None:
                emit(self.config.node, "error", error=f"queue write failed: {message.failed}")
            return refusal
        key = message.digest()
        # RFC 1047: a client that gave up waiting for our 250 sends the message again,
        # maybe while its first copy is still being made durable, before that copy's
        # records exist; the resend waits for the first copy, then finds its records
        in_flight = self.duplicates.in_flight
        while (original := in_flight.get(key)) is not None:
            await asyncio.shield(original)
        known_id, rcpts = self.duplicates.check(key, envelope.rcpt_tos)
        if not rcpts:
            emit(self.config.node, "duplicate", queue_id=known_id, client=client_ip(session))
            return f"250 2.0.0 Ok: queued as {known_id}"
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        in_flight[key] = done

        def settle(_: object = None) -> None:
            """This copy is queued, refused or dropped: resends waiting for it go on."""
            del in_flight[key]
            done.set_result(None)

        try:
            queueing = await self._check_and_queue(session, envelope, message, key, rcpts)
        except BaseException:
            settle()
            raise
        if isinstance(queueing, str):  # refused
            settle()
            return queueing
        queueing.add_done_callback(settle)  # not when this session ends: the write goes on
        try:
            # shielded: a client hanging up now cancels this session, not the write
            await asyncio.shield(queueing)
        except OSError as exc:
            emit(self.config.node, "error", error=f"queue write failed: {exc}")
            return QUEUE_UNAVAILABLE
        return f"250 2.0.0 Ok: queued as {message.qid}"

    async def _check_and_queue(
        self,
        session: Session,
        envelope: RelayEnvelope,
        message: Incoming,
        key: str,
        rcpts: list[str],
    ) -> str | asyncio.Task[None]:
        """Mail authentication on the new message, then its queueing begun: a refusal,
        or the task that makes it durable."""
        qid, sender = message.qid, message.sender
        queued = QueuedEnvelope(
            id=qid,
            sender=sender,
            recipients=[_recipient(a, envelope.dsn_rcpt[a]) for a in rcpts],
            ret=envelope.dsn_mail.get("RET", "").upper(),
            envid=envelope.dsn_mail.get("ENVID", ""),
            arrival=time.time(),
            message_id=message_id(message.head),
            mail_options=[o for o in envelope.mail_options if o in _FORWARDED_MAIL_OPTIONS],
            digest=key,  # the queue records it in the duplicate filter with the message
        )
        # mail authentication: sign, check, honour DMARC, forward (mxlab.nodes.mailauth)
        refusal, changed = await on_receive(self.config, session, queued, message.content)
        if refusal is not None:
            message.discard()
            emit(self.config.node, "auth_refused", reply=refusal, client=client_ip(session))
            return refusal
        if changed is not None:
            message.replace(changed)
            envelope.dot_lines = True  # unknown: sent dot-stuffed

        def queued_now() -> None:
            emit(
                self.config.node,
                "received",
                queue_id=qid,
                message_id=queued.message_id,
                **{"from": sender, "to": rcpts},
                hop=f"{session.host_name or 'unknown'} [{client_ip(session)}]",
                status="queued",
                delay=round(time.time() - message.started, 3),
                client=client_ip(session),
                size=message.size,
            )

        return self.delivery.accept(queued, message.spool, queued_now, dot_lines=envelope.dot_lines)


def make_smtp(
    config: RelayNodeConfig,
    handler: RelayHandler,
    tls_context: ssl.SSLContext | None,
    budget: ConnectionBudget | None = None,
) -> RelaySMTP:
    """One protocol instance per connection, as asyncio's create_server wants."""
    smtp = RelaySMTP(
        handler,
        hostname=config.fqdn,
        ident="ESMTP mxlab",
        data_size_limit=config.max_message_size,  # RFC 1870: advertised and enforced
        enable_SMTPUTF8=True,
        decode_data=False,  # keep the bytes exactly as sent
        tls_context=tls_context,
        authenticator=handler.authenticate,
        auth_required=handler.submission,  # RFC 6409 §4.3
        auth_require_tls=not config.allow_plaintext_auth,
        auth_exclude_mechanism=None if handler.submission else ["PLAIN", "LOGIN"],
    )
    smtp.budget = budget
    return smtp
