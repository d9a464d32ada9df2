"""LMTP ingest (RFC 2033) on aiosmtpd's LMTP class: accept the store's users at RCPT,
write one durable copy per recipient with its trace headers, and answer DATA with one
reply per recipient (§4.2) — each 250 only once that copy is fsynced."""

from __future__ import annotations

import asyncio
import secrets
import socket
from datetime import UTC, datetime
from email.utils import format_datetime

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session, syntax

from mxlab.nodes.config import StoreNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.relay.esmtp import with_enhanced_code
from mxlab.nodes.relay.trace import message_id
from mxlab.nodes.store.maildir import INBOX
from mxlab.nodes.store.mailstore import MailStore


def trace_headers(
    *, sender: str, rcpt: str, helo: str, client_ip: str, by: str, delivery_id: str
) -> bytes:
    """Return-Path and Delivered-To (RFC 5321 §4.4), then the Received line whose
    ``by`` host the lab checker reads to verify the route — kept on one line, in the
    exact shape the checker expects."""
    stamp = format_datetime(datetime.now(UTC))
    return (
        f"Return-Path: <{sender}>\r\n"
        f"Delivered-To: {rcpt}\r\n"
        f"Received: from {helo} ({client_ip}) by {by} (mxlab store) with LMTP id"
        f" {delivery_id} for <{rcpt}>; {stamp}\r\n"
    ).encode("utf-8", "surrogateescape")


class StoreLMTP(LMTP):
    """aiosmtpd's LMTP with Nagle off, like every socket the store accepts, and
    enhanced status codes on aiosmtpd's own replies too (RFC 2033 §5 requires
    ENHANCEDSTATUSCODES)."""

    _lhlo_reply = False  # the LHLO reply keeps its plain form (RFC 2034 §3)

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:
        self._lhlo_reply = True
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._lhlo_reply = False

    async def push(self, status: str | bytes) -> None:  # type: ignore[override]
        if isinstance(status, str) and not self._lhlo_reply:
            status = with_enhanced_code(status)
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


class DeliveryHandler:
    """aiosmtpd hooks: RCPT checks the user, DATA writes each copy."""

    def __init__(self, config: StoreNodeConfig, store: MailStore) -> None:
        self.config = config
        self.store = store
        self.users = {a.lower() for a in config.users}

    async def handle_EHLO(
        self,
        server: LMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """LHLO: RFC 2033 §5 makes PIPELINING and ENHANCEDSTATUSCODES mandatory;
        aiosmtpd pipelines already but does not say so."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_RCPT(
        self,
        server: LMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() not in self.users:
            emit(self.config.node, "rcpt_refused", to=address, client=session.peer[0])
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: LMTP, session: Session, envelope: Envelope) -> str:
        """RFC 2033 §4.2: one reply line per accepted recipient, in RCPT order."""
        content = envelope.original_content or b""  # CRLF, dot-unstuffed, undecoded
        sender = envelope.mail_from or ""
        sender = "" if sender == "<>" else sender
        replies = []
        for rcpt in envelope.rcpt_tos:
            replies.append(await self._deliver_one(session, sender, rcpt, content))
        return "\r\n".join(replies)

    async def _deliver_one(self, session: Session, sender: str, rcpt: str, content: bytes) -> str:
        delivery_id = secrets.token_hex(6).upper()
        data = (
            trace_headers(
                sender=sender,
                rcpt=rcpt,
                helo=session.host_name or "unknown",
                client_ip=session.peer[0],
                by=self.config.fqdn,
                delivery_id=delivery_id,
            )
            + content
        )
        user = self.store.user(rcpt)
        try:
            path = await asyncio.to_thread(user.maildir.deliver, INBOX, data)
        except OSError as exc:
            emit(self.config.node, "error", error=f"delivery to {rcpt} failed: {exc}")
            return f"451 4.3.0 <{rcpt}> cannot store the message now"
        uid = user.add_written(INBOX, path, len(data), data=data)
        emit(
            self.config.node,
            "delivered",
            id=delivery_id,
            message_id=message_id(data),  # so `mxlab trace` follows mail into the mailbox
            to=rcpt,
            uid=uid,
            size=len(data),
            client=session.peer[0],
            **{"from": sender},
        )
        return f"250 2.0.0 <{rcpt}> delivered as {delivery_id}"


def make_lmtp(config: StoreNodeConfig, handler: DeliveryHandler) -> StoreLMTP:
    return StoreLMTP(
        handler,
        hostname=config.fqdn,
        ident="LMTP mxlab store",
        decode_data=False,  # keep the bytes exactly as received
        enable_SMTPUTF8=True,
        data_size_limit=64 * 1024 * 1024,
    )
