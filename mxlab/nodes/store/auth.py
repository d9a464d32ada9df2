"""Who may log in: full address and password, checked against the config's scrypt
hashes; and the SASL PLAIN message both IMAP and POP3 accept (RFC 4616)."""

from __future__ import annotations

import base64
import binascii

from mxlab.nodes.config import StoreNodeConfig
from mxlab.nodes.login_limits import LoginThrottle
from mxlab.nodes.passwords import verify_password
from mxlab.nodes.store.security import Security


class Authenticator:
    def __init__(self, config: StoreNodeConfig) -> None:
        self.hashes = {addr.lower(): user.password_hash for addr, user in config.users.items()}
        self.throttle = LoginThrottle(config.login_limits)  # IMAP and POP3 alike

    def failed(self, security: Security) -> bool:
        """A failed login on this connection: sets the delay its answer waits for
        (Dovecot's auth_failure_delay, growing per source address); True when the
        connection has used up its failures and must be closed after the answer."""
        if security.attempts is None:
            security.attempts = self.throttle.attempts(security.peer)
        security.hold = security.attempts.failed()
        return security.attempts.exhausted

    def login(self, user: str, password: str) -> str | None:
        """The canonical (lower-case) address when the password is right, else None."""
        address = user.lower()
        stored = self.hashes.get(address)
        if stored is not None and verify_password(stored, password):
            return address
        return None

    def plain(self, response: bytes) -> str | None:
        """RFC 4616 §2: base64 of authzid NUL authcid NUL passwd; an authzid other
        than the user itself is refused (no proxy logins)."""
        try:
            authzid, authcid, passwd = base64.b64decode(response, validate=True).split(b"\0")
            user, password = authcid.decode(), passwd.decode()
            authz = authzid.decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        if authz and authz.lower() != user.lower():
            return None
        return self.login(user, password)
