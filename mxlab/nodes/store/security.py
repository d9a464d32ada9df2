"""A connection's transport security as IMAP and POP3 both see it: is TLS on, can
STARTTLS/STLS still turn it on, and may a password be sent in the clear now."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Security:
    allow_plaintext: bool = True  # the lab's allow_plaintext_auth
    tls_available: bool = False  # the node has a certificate
    secure: bool = False  # TLS is on: implicit (993/995) or after STARTTLS/STLS
    starttls_pending: bool = False  # the I/O layer must start TLS before reading on

    @property
    def can_starttls(self) -> bool:
        return self.tls_available and not self.secure

    @property
    def plaintext_ok(self) -> bool:
        """RFC 3501 §6.2.3 LOGINDISABLED, RFC 2595 §2.2: passwords only where allowed."""
        return self.secure or self.allow_plaintext

    def request_tls(self) -> None:
        self.starttls_pending = True

    def tls_started(self) -> None:
        """The I/O layer finished the handshake STARTTLS or STLS asked for."""
        self.starttls_pending = False
        self.secure = True
