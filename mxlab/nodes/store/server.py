"""The store node: LMTP in (aiosmtpd), IMAP and POP3 out (our sans-IO sessions behind
a thin asyncio layer), all over one MailStore in one event loop — so a delivery is
seen by every open session the moment it is indexed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from mxlab.nodes.config import StoreNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.listen import listen, quiet_on_stop
from mxlab.nodes.reload import on_sighup
from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.imap_session import ImapSession
from mxlab.nodes.store.lmtp import DeliveryHandler, make_lmtp
from mxlab.nodes.store.mailstore import MailStore
from mxlab.nodes.store.pop3 import Pop3Session
from mxlab.nodes.store.security import Security
from mxlab.nodes.tls import server_tls_context

READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class StoreLimits:
    """What one client may take from the store, so that no client — buggy, hostile or
    fuzzing — can starve the others."""

    max_literal: int = 64 * 1024 * 1024  # an APPEND's message (the LMTP size limit)
    max_line: int = 64 * 1024  # an IMAP command line without its literals
    max_user_sessions: int = 20  # logged-in IMAP+POP3 sessions per user
    login_timeout: float = 60.0  # idle before login: nobody is owed a long wait
    imap_timeout: float = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes
    pop3_timeout: float = 10 * 60.0  # RFC 1939 §3: at least 10 minutes


class Session(Protocol):
    security: Security

    @property
    def closed(self) -> bool: ...

    @property
    def authenticated(self) -> bool: ...

    def greeting(self) -> bytes: ...
    def receive(self, data: bytes) -> bytes: ...
    def close(self) -> None: ...


async def run_session(
    session: Session,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timeouts: tuple[float, float],
    bye: Callable[[], bytes] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Pump bytes between a socket and a sans-IO session until either side ends;
    ``timeouts`` are the idle limits before and after login."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies go out whole
    quickack = sock is not None and hasattr(socket, "TCP_QUICKACK")
    peer = writer.get_extra_info("peername")
    session.security.peer = peer[0] if isinstance(peer, tuple) else ""  # login penalty
    try:
        writer.write(session.greeting())
        while not session.closed:
            timeout = timeouts[1] if session.authenticated else timeouts[0]
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            except TimeoutError:
                if bye is not None:
                    writer.write(bye())
                break
            if not data:
                break
            if quickack:
                # imaplib writes a literal and its CRLF separately; its Nagle holds the
                # CRLF until we ACK, and Linux delays that ACK ~40 ms unless told not
                # to (quick-ACK mode lapses, so it is renewed after every read)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            reply = session.receive(data)
            if hold := session.security.take_hold():  # a failed login's delay
                await asyncio.sleep(hold)
            writer.write(reply)
            await writer.drain()
            if session.security.starttls_pending and tls is not None:
                await writer.start_tls(tls)  # RFC 3501 §6.2.1, RFC 2595 §4
                session.security.tls_started()
        await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        session.close()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def run_imap(
    session: ImapSession,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext | None = None,
    limits: StoreLimits = StoreLimits(),
) -> None:
    """IMAP adds the push side: changes from other sessions wake an IDLE client."""
    wake = asyncio.Event()
    session.notify = wake.set

    async def push() -> None:
        while True:
            await wake.wait()
            wake.clear()
            data = session.updates()
            if data:
                writer.write(data)

    pusher = asyncio.create_task(push())
    try:
        timeouts = (limits.login_timeout, limits.imap_timeout)
        await run_session(session, reader, writer, timeouts, session.timeout_bye, tls)
    finally:
        pusher.cancel()
        session.notify = None


def tls_context(config: StoreNodeConfig) -> ssl.SSLContext | None:
    """The node's lab-CA certificate for STARTTLS/STLS and the implicit-TLS ports; a
    store whose files are missing still serves plaintext, and says so."""
    if config.tls is None:
        return None
    try:
        return server_tls_context(config.tls)
    except (OSError, ssl.SSLError) as exc:
        emit(config.node, "warning", warning=f"TLS disabled: cannot load certificate: {exc}")
        return None


async def serve(config: StoreNodeConfig, limits: StoreLimits | None = None) -> None:
    """Listen for LMTP, IMAP and POP3 (and IMAPS/POP3S when configured) until cancelled."""
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    limits = limits or StoreLimits()
    loop = asyncio.get_running_loop()
    store = MailStore(config.state_path / "mail", limits.max_user_sessions)
    for address in config.users:
        store.user(address)  # maildir, index and special folders exist before any login
    auth = Authenticator(config)
    handler = DeliveryHandler(config, store)
    tls = tls_context(config)

    def security(secure: bool) -> Security:
        return Security(config.allow_plaintext_auth, tls is not None, secure)

    def imap_client(secure: bool) -> Callable[..., Awaitable[None]]:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = ImapSession(
                store,
                auth,
                config.fqdn,
                security=security(secure),
                max_literal=limits.max_literal,
                max_line=limits.max_line,
                node=config.node,
            )
            await run_imap(session, reader, writer, tls, limits)

        return quiet_on_stop(client)

    def pop3_client(secure: bool) -> Callable[..., Awaitable[None]]:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = Pop3Session(store, auth, config.fqdn, security(secure), config.node)
            timeouts = (limits.login_timeout, limits.pop3_timeout)
            await run_session(session, reader, writer, timeouts, tls=tls)

        return quiet_on_stop(client)

    def reload(new: StoreNodeConfig) -> None:
        """SIGHUP: users added, removed or given new passwords log in and take delivery
        from now on (ports and TLS need a restart)."""
        for address in new.users:
            store.user(address)
        auth.hashes = Authenticator(new).hashes
        handler.config, handler.users = new, {a.lower() for a in new.users}

    on_sighup(config, reload)  # before any port answers: a HUP must never end the node
    servers: list[asyncio.Server] = []
    try:
        address = config.address
        # RFC 8314 §3.3 implicit TLS first: once the plaintext ports greet (what the
        # lab's readiness probe checks), these listen too
        if tls is not None and config.imaps_port:
            await listen(
                config,
                servers,
                config.imaps_port,
                asyncio.start_server(
                    imap_client(True), address, config.imaps_port, limit=READ_SIZE, ssl=tls
                ),
            )
        if tls is not None and config.pop3s_port:
            await listen(
                config,
                servers,
                config.pop3s_port,
                asyncio.start_server(pop3_client(True), address, config.pop3s_port, ssl=tls),
            )
        await listen(
            config,
            servers,
            config.lmtp_port,
            loop.create_server(lambda: make_lmtp(config, handler), address, config.lmtp_port),
        )
        await listen(
            config,
            servers,
            config.imap_port,
            asyncio.start_server(imap_client(False), address, config.imap_port, limit=READ_SIZE),
        )
        await listen(
            config,
            servers,
            config.pop3_port,
            asyncio.start_server(pop3_client(False), address, config.pop3_port),
        )
        emit(
            config.node,
            "listening",
            address=config.address,
            lmtp=config.lmtp_port,
            imap=config.imap_port,
            pop3=config.pop3_port,
            imaps=config.imaps_port if tls else None,
            pop3s=config.pop3s_port if tls else None,
            tls=tls is not None,
            users=len(config.users),
        )
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()
        store.close()
