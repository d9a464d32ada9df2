"""The SMTP side of the relay: aiosmtpd does the protocol, our handler hooks add the
relay policy (RCPT), loop and smuggling checks and durable queueing (DATA)."""

from __future__ import annotations

import asyncio
import ssl
import time

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.login_limits import LoginThrottle
from mxlab.nodes.message import message_id
from mxlab.nodes.passwords import verify_password
from mxlab.nodes.relay.dedupe import DuplicateFilter
from mxlab.nodes.relay.delivery import Delivery
from mxlab.nodes.relay.esmtp import ConnectionBudget, RelayEnvelope, RelaySMTP
from mxlab.nodes.relay.policy import address_error, rcpt_verdict, sender_verdict
from mxlab.nodes.relay.queue import Envelope as QueuedEnvelope
from mxlab.nodes.relay.queue import Queue, Recipient, new_queue_id
from mxlab.nodes.relay.trace import (
    MAX_LINE,
    count_received,
    has_bare_line_ending,
    longest_line,
    protocol_name,
    received_header,
)
from mxlab.nodes.smtp_session import client_ip

# added to aiosmtpd's SIZE, 8BITMIME, SMTPUTF8, STARTTLS and AUTH; see esmtp.py
_EXTENSIONS = ("PIPELINING", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING")
# MAIL parameters worth carrying to the next hop (RFC 6152, RFC 6531)
_FORWARDED_MAIL_OPTIONS = ("BODY=8BITMIME", "SMTPUTF8")


def null_to_empty(path: str) -> str:
    """aiosmtpd reports the null reverse-path as "<>"; the queue stores it as ""."""
    return "" if path == "<>" else path


def _recipient(address: str, dsn: dict[str, str]) -> Recipient:
    notify = dsn.get("NOTIFY", "").upper()
    return Recipient(
        address=address, notify=notify.split(",") if notify else [], orcpt=dsn.get("ORCPT", "")
    )


class RelayHandler:
    """aiosmtpd handler for one listener: MX (port 25) or submission (port 587)."""

    def __init__(
        self,
        config: RelayNodeConfig,
        queue: Queue,
        delivery: Delivery,
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

    async def handle_DATA(
        self, server: RelaySMTP, session: Session, envelope: RelayEnvelope
    ) -> str:
        content = envelope.original_content or b""
        if has_bare_line_ending(content):
            return "550 5.6.0 bare CR or LF in message data (RFC 5321 §2.3.8)"
        if longest_line(content) > MAX_LINE:
            return "500 5.5.2 line too long (RFC 5321 §4.5.3.1.6)"
        if count_received(content) > self.config.max_received_headers:
            return "554 5.4.6 too many Received headers: mail loop detected"
        sender = null_to_empty(envelope.mail_from or "")
        key = self.duplicates.key(sender, content)
        known_id, rcpts = self.duplicates.check(key, envelope.rcpt_tos)
        if not rcpts:
            emit(self.config.node, "duplicate", queue_id=known_id, client=client_ip(session))
            return f"250 2.0.0 Ok: queued as {known_id}"
        qid = new_queue_id()
        started = time.time()
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
            rcpts=rcpts,
        )
        queued = QueuedEnvelope(
            id=qid,
            sender=sender,
            recipients=[_recipient(a, envelope.dsn_rcpt[a]) for a in rcpts],
            ret=envelope.dsn_mail.get("RET", "").upper(),
            envid=envelope.dsn_mail.get("ENVID", ""),
            arrival=time.time(),
            message_id=message_id(content),
            mail_options=[o for o in envelope.mail_options if o in _FORWARDED_MAIL_OPTIONS],
            digest=key,  # the queue records it in the duplicate filter with the message
        )

        def queued_now() -> None:
            emit(
                self.config.node,
                "received",
                queue_id=qid,
                message_id=queued.message_id,
                **{"from": sender, "to": rcpts},
                hop=f"{session.host_name or 'unknown'} [{client_ip(session)}]",
                status="queued",
                delay=round(time.time() - started, 3),
                client=client_ip(session),
                size=len(content),
            )

        try:
            # shielded: a client hanging up now cancels this session, not the write
            await asyncio.shield(self.delivery.accept(queued, trace + content, queued_now))
        except OSError as exc:
            emit(self.config.node, "error", error=f"queue write failed: {exc}")
            return "451 4.3.0 cannot queue the message now, try again later"
        return f"250 2.0.0 Ok: queued as {qid}"


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
