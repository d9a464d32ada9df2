"""What the relay's SMTP and the store's LMTP read off an aiosmtpd session."""

from __future__ import annotations

from aiosmtpd.smtp import Session


def client_ip(session: Session) -> str:
    """The client's address. aiosmtpd types ``peer`` as a string, but it holds the
    socket's (host, port) pair."""
    peer: object = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else ""
