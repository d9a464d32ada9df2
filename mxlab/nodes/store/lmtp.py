"""LMTP ingest (RFC 2033) on aiosmtpd's LMTP class: accept the store's users at RCPT,
write one durable copy per recipient with its trace headers, and answer DATA with one
reply per recipient (§4.2) — each 250 only once that copy is fsynced.

Exactly once: a relay names its queue entry (``mxlab.nodes.delivery_id``), and the
store records (relay, queue id, recipient) in a durable log (``mxlab.nodes.seen``)
before it writes the copy: ``B:<delivery id>`` (begun, fsynced before the copy is),
then ``D`` (done). A relay killed before it read our 250 sends the copy again: a
``D`` is answered 250 without a second copy; a ``B`` alone (we were killed too) is
settled by looking for the copy's delivery id in the mailbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
from datetime import UTC, datetime
from email.utils import format_datetime

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session, syntax

from mxlab.nodes.config import StoreNodeConfig
from mxlab.nodes.delivery_id import QUEUE_ID_EXTENSION, take_queue_id
from mxlab.nodes.events import emit
from mxlab.nodes.mailauth.quarantine import quarantined
from mxlab.nodes.message import message_id
from mxlab.nodes.replies import with_enhanced_code
from mxlab.nodes.seen import SeenLog
from mxlab.nodes.smtp_session import client_ip
from mxlab.nodes.store.maildir import INBOX
from mxlab.nodes.store.mailstore import SPECIAL_FOLDERS, MailStore, UserMail

JUNK = next(name for name, use in SPECIAL_FOLDERS.items() if use == "\\Junk")
DELIVERED_LOG = "lmtp-delivered.log"
DELIVERED_TTL = 5 * 24 * 3600.0  # a relay retries for its queue lifetime: Postfix's 5 days
DELIVERED_MAX = 200_000  # recipient copies remembered
_HEAD = 4096  # bytes of a stored copy that hold our trace headers


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


def delivery_key(relay: str, queue_id: str, rcpt: str) -> str:
    """What identifies one copy: the relay (its LHLO name), its queue id, the
    recipient; "" when the relay gave no queue id."""
    if not queue_id:
        return ""
    origin = f"{relay.lower()}\0{queue_id}\0{rcpt.lower()}"
    return hashlib.sha256(origin.encode("utf-8", "surrogateescape")).hexdigest()[:40]


class StoreEnvelope(Envelope):
    """aiosmtpd's envelope plus the relay's queue id (XQUEUEID), if it gave one."""

    def __init__(self) -> None:
        super().__init__()
        self.queue_id = ""


class StoreLMTP(LMTP):
    """aiosmtpd's LMTP with Nagle off, like every socket the store accepts, and
    enhanced status codes on aiosmtpd's own replies too (RFC 2033 §5 requires
    ENHANCEDSTATUSCODES)."""

    _lhlo_reply = False  # the LHLO reply keeps its plain form (RFC 2034 §3)
    envelope: StoreEnvelope

    def _create_envelope(self) -> StoreEnvelope:
        return StoreEnvelope()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """Take XQUEUEID off the line before aiosmtpd refuses parameters it does not
        know (555)."""
        taken = take_queue_id(arg or "")
        if taken is None:
            await self.push(f"501 5.5.4 bad {QUEUE_ID_EXTENSION} parameter")
            return
        rest, queue_id = taken
        await super().smtp_MAIL(rest or None)
        if self.envelope.mail_from is not None:
            self.envelope.queue_id = queue_id

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:
        self._lhlo_reply = True
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._lhlo_reply = False

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and not self._lhlo_reply:
            status = with_enhanced_code(status)
        await super().push(status)  # type: ignore[type-var]

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
        self.delivered = SeenLog(config.state_path / DELIVERED_LOG, DELIVERED_TTL, DELIVERED_MAX)
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    def close(self) -> None:
        self.delivered.close()

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
        return [
            *responses[:-1],
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            f"250-{QUEUE_ID_EXTENSION}",
            responses[-1],
        ]

    async def handle_RCPT(
        self,
        server: LMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() not in self.users:
            emit(self.config.node, "rcpt_refused", to=address, client=client_ip(session))
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: LMTP, session: Session, envelope: StoreEnvelope) -> str:
        """RFC 2033 §4.2: one reply line per accepted recipient, in RCPT order."""
        content = envelope.original_content or b""  # CRLF, dot-unstuffed, undecoded
        sender = envelope.mail_from or ""
        sender = "" if sender == "<>" else sender
        replies = []
        for rcpt in envelope.rcpt_tos:
            key = delivery_key(session.host_name or "", envelope.queue_id, rcpt)
            # shielded: a relay hanging up (or killed) now must not leave a copy
            # written but unindexed, nor its record half made
            replies.append(
                await asyncio.shield(
                    self._once(key, session, envelope.queue_id, sender, rcpt, content)
                )
            )
        return "\r\n".join(replies)

    async def _once(
        self, key: str, session: Session, queue_id: str, sender: str, rcpt: str, content: bytes
    ) -> str:
        """Deliver unless this (relay, queue id, recipient) was delivered already; one
        delivery per key at a time, so a resend racing its original waits for it."""
        if not key:
            return await self._deliver_one(session, sender, rcpt, content, "", "")
        while (running := self._in_flight.get(key)) is not None:
            await asyncio.shield(running)
        done = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            if await self._already_delivered(key, rcpt):
                emit(
                    self.config.node,
                    "duplicate",
                    queue_id=queue_id,
                    to=rcpt,
                    client=client_ip(session),
                )
                return f"250 2.0.0 <{rcpt}> delivered already"
            return await self._deliver_one(session, sender, rcpt, content, key, queue_id)
        finally:
            del self._in_flight[key]
            done.set_result(None)

    async def _already_delivered(self, key: str, rcpt: str) -> bool:
        state = self.delivered.get(key)
        if state is None:
            return False
        if state == "D":
            return True
        # begun, never marked done: killed in between; did the copy reach the mailbox?
        found = await asyncio.to_thread(_has_copy, self.store.user(rcpt), state[2:])
        if found:
            self.delivered.put(key, "D")
        return found

    async def _deliver_one(
        self, session: Session, sender: str, rcpt: str, content: bytes, key: str, queue_id: str
    ) -> str:
        delivery_id = secrets.token_hex(6).upper()
        data = (
            trace_headers(
                sender=sender,
                rcpt=rcpt,
                helo=session.host_name or "unknown",
                client_ip=client_ip(session),
                by=self.config.fqdn,
                delivery_id=delivery_id,
            )
            + content
        )
        user = self.store.user(rcpt)
        # DMARC p=quarantine, as the relay marked it: the Junk folder (RFC 6154 \Junk)
        folder = JUNK if quarantined(content) else INBOX

        def write() -> str:
            if key:  # the record first: a copy on disk always has one
                self.delivered.put(key, f"B:{delivery_id}")
                self.delivered.sync()
            return user.maildir.deliver(folder, data)

        try:
            path = await asyncio.to_thread(write)
        except OSError as exc:
            emit(self.config.node, "error", error=f"delivery to {rcpt} failed: {exc}")
            return f"451 4.3.0 <{rcpt}> cannot store the message now"
        if key:
            self.delivered.put(key, "D")  # one write, no fsync: a lost "D" costs a look
        uid = user.add_written(folder, path, len(data), data=data)
        emit(
            self.config.node,
            "delivered",
            id=delivery_id,
            queue_id=queue_id,  # the relay's, when it gave one
            message_id=message_id(data),  # so `mxlab trace` follows mail into the mailbox
            to=rcpt,
            uid=uid,
            folder=folder,
            size=len(data),
            client=client_ip(session),
            **{"from": sender},
        )
        return f"250 2.0.0 <{rcpt}> delivered as {delivery_id}"


def _has_copy(user: UserMail, delivery_id: str) -> bool:
    """Is a copy with our trace header ``... with LMTP id <delivery_id>`` in the
    INBOX? Only asked after a crash, for one copy."""
    marker = f" with LMTP id {delivery_id} ".encode()
    base = user.maildir.folder_dir(INBOX)
    for name in user.maildir.files(INBOX):
        try:
            with open(base / name, "rb") as f:
                if marker in f.read(_HEAD):
                    return True
        except FileNotFoundError:
            continue  # expunged or moved meanwhile
    return False


def make_lmtp(config: StoreNodeConfig, handler: DeliveryHandler) -> StoreLMTP:
    return StoreLMTP(
        handler,
        hostname=config.fqdn,
        ident="LMTP mxlab store",
        decode_data=False,  # keep the bytes exactly as received
        enable_SMTPUTF8=True,
        data_size_limit=64 * 1024 * 1024,
    )
