"""The sink's SMTP server (aiosmtpd): any sender, any recipient, every message kept
(mxlab.nodes.sink.record) before the 250, as Postfix's smtp-sink or Mailpit do. With
a certificate it offers STARTTLS (RFC 3207) and records whether the client took it,
so a lab can check that a relay sends over TLS where it is offered."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mxlab.nodes.config import SinkNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.listen import listen
from mxlab.nodes.message import message_id
from mxlab.nodes.sink.record import keep
from mxlab.nodes.tls import server_tls_context


def sink_dir(state_dir: Path) -> Path:
    """Where a sink node keeps its record, inside its state directory."""
    return state_dir / "sink"


class SinkHandler:
    def __init__(self, config: SinkNodeConfig, directory: Path) -> None:
        self.config = config
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        rcpts = list(envelope.rcpt_tos)
        sender = envelope.mail_from or ""
        tls = session.ssl["cipher"][1] if session.ssl else None  # after STARTTLS
        msg_id = await asyncio.to_thread(keep, self.directory, sender, rcpts, peer, data, tls)
        emit(
            self.config.node, "sink.kept", message_id=message_id(data), id=msg_id,
            mail_from=sender, to=rcpts, size=len(data), tls=tls,
        )  # fmt: skip
        return f"250 2.0.0 Ok: kept as {msg_id}"  # RFC 5321 §4.2: only after the fsync


async def serve(config: SinkNodeConfig, directory: Path | None = None) -> None:
    """Take SMTP on the node's address until cancelled, keeping mail in ``directory``
    (a node's: sink/ in its state directory)."""
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    directory = directory or sink_dir(config.state_path)
    directory.mkdir(parents=True, exist_ok=True)
    handler = SinkHandler(config, directory)
    loop = asyncio.get_running_loop()
    tls = server_tls_context(config.tls) if config.tls else None

    def factory() -> Any:
        return SMTP(
            handler,
            hostname=config.fqdn,
            ident="mxlab sink",
            decode_data=False,  # the bytes exactly as received
            enable_SMTPUTF8=True,
            data_size_limit=config.max_message_size,
            tls_context=tls,  # STARTTLS offered, not required: a sink takes any client
        )

    servers: list[asyncio.Server] = []
    await listen(
        config,
        servers,
        config.smtp_port,
        loop.create_server(factory, config.address, config.smtp_port),
    )
    try:
        await asyncio.Event().wait()
    finally:
        for srv in servers:
            srv.close()
