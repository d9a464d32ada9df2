"""A connection's security as IMAP and POP3 both see it: is TLS on, can
STARTTLS/STLS still turn it on, may a password be sent in the clear now, and how its
failed logins stand (``mxlab.nodes.login_limits``)."""

from __future__ import annotations

from dataclasses import dataclass

from mxlab.nodes.login_limits import LoginAttempts


@dataclass
class Security:
    # the node passes its config's allow_plaintext_auth (default off); a session made
    # without a Security (the sans-IO unit tests) speaks plaintext
    allow_plaintext: bool = True
    tls_available: bool = False  # the node has a certificate
    secure: bool = False  # TLS is on: implicit (993/995) or after STARTTLS/STLS
    starttls_pending: bool = False  # the I/O layer must start TLS before reading on
    peer: str = ""  # the client's address, for the per-source login penalty
    attempts: LoginAttempts | None = None  # failed logins, once there is one
    hold: float = 0.0  # seconds the I/O layer waits before sending the next reply

    @property
    def can_starttls(self) -> bool:
        return self.tls_available and not self.secure

    @property
    def plaintext_ok(self) -> bool:
        """RFC 3501 §6.2.3 LOGINDISABLED, RFC 2595 §2.2: passwords only where allowed."""
        return self.secure or self.allow_plaintext

    def request_tls(self) -> None:
        self.starttls_pending = True

    def take_hold(self) -> float:
        """The delay owed before the reply now going out (a failed login's)."""
        hold, self.hold = self.hold, 0.0
        return hold

    def tls_started(self) -> None:
        """The I/O layer finished the handshake STARTTLS or STLS asked for."""
        self.starttls_pending = False
        self.secure = True
