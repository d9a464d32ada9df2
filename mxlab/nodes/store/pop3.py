"""POP3 (RFC 1939) with CAPA (RFC 2449), SASL PLAIN (RFC 5034) and response codes
(RFC 2449 §8, RFC 3206), as a sans-IO state machine: bytes in, bytes out."""

from __future__ import annotations

from collections.abc import Callable

from mxlab.nodes.events import emit
from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.index import MessageInfo
from mxlab.nodes.store.maildir import INBOX
from mxlab.nodes.store.mailstore import MailStore, UserMail
from mxlab.nodes.store.security import Security

MAX_LINE = 1024  # RFC 2449 §4 allows 255 octets of arguments; be lenient
CAPABILITIES = (
    "TOP",
    "UIDL",
    "RESP-CODES",
    "PIPELINING",
    "AUTH-RESP-CODE",
    "USER",
    "SASL PLAIN",
    "IMPLEMENTATION mxlab",
)


def byte_stuff(data: bytes) -> bytes:
    """RFC 1939 §3: a line starting with "." gets one more; end with CRLF "." CRLF."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def top_of(data: bytes, lines: int) -> bytes:
    """RFC 1939 §7 TOP: the header, the blank line, then ``lines`` body lines."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    head, body = data[: end + 4], data[end + 4 :]
    if lines <= 0:
        return head
    kept = body.split(b"\r\n")[:lines]
    return head + b"\r\n".join(kept) + (b"\r\n" if len(kept) == lines else b"")


def _ok(text: str = "") -> bytes:
    return f"+OK {text}\r\n".encode() if text else b"+OK\r\n"


def _err(text: str) -> bytes:
    return f"-ERR {text}\r\n".encode()


class Pop3Session:
    """One POP3 connection. Feed it received bytes; it returns what to send."""

    def __init__(
        self,
        store: MailStore,
        auth: Authenticator,
        hostname: str,
        security: Security | None = None,
        node: str = "store",
    ) -> None:
        self.store = store
        self.node = node
        self.security = security or Security()
        self.auth = auth
        self.hostname = hostname
        self.buffer = b""
        self.closed = False
        self.user_arg: str | None = None
        self.address: str | None = None  # set once authenticated: TRANSACTION state
        self.mail: UserMail | None = None
        self.uidvalidity = 0
        self.drop: list[MessageInfo] = []  # the maildrop as seen at login (§5)
        self.deleted: set[int] = set()  # message numbers marked by DELE
        self.pending_sasl = False  # AUTH PLAIN sent without an initial response

    def greeting(self) -> bytes:
        return _ok(f"{self.hostname} mxlab POP3 ready")

    @property
    def authenticated(self) -> bool:
        """In TRANSACTION state: the long autologout timer applies (§3)."""
        return self.address is not None

    def receive(self, data: bytes) -> bytes:
        """Process every complete line in ``data`` (PIPELINING, RFC 2449 §6.6)."""
        self.buffer += data
        out = []
        while not self.closed and not self.security.starttls_pending:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                bare = self.buffer.find(b"\n")
                if bare < 0:
                    if len(self.buffer) > MAX_LINE:
                        self.buffer = b""
                        out.append(_err("line too long"))
                    break
                end, skip = bare, 1
            else:
                skip = 2
            line, self.buffer = self.buffer[:end], self.buffer[end + skip :]
            if len(line) > MAX_LINE:
                out.append(_err("line too long"))
                continue
            out.append(self._line(line))
        return b"".join(out)

    def close(self) -> None:
        """Connection gone: release the maildrop without entering UPDATE (§6)."""
        if self.address is not None:
            self.store.pop3_locked.discard(self.address)
            self.store.close_session(self.address)
            self.address = None
        self.closed = True

    # -- dispatch --------------------------------------------------------------------

    def _line(self, raw: bytes) -> bytes:
        text = raw.decode("utf-8", "replace")
        if self.pending_sasl:
            self.pending_sasl = False
            if text.strip() == "*":  # RFC 5034 §4: the client cancels
                return _err("authentication cancelled")
            return self._finish_login(self.auth.plain(text.strip().encode()))
        verb, _, arg = text.strip().partition(" ")
        verb = verb.upper()
        if verb == "CAPA":
            return self._capa()
        if verb == "QUIT":
            return self._quit()
        if verb == "NOOP" and self.address is not None:
            return _ok()
        handler = (self._authorization if self.address is None else self._transaction).get(verb)
        if handler is None:
            return _err(f"command not valid here: {verb[:20]}")
        try:
            return handler(self, arg)
        except (ValueError, IndexError):
            return _err("bad argument")

    def _capa(self) -> bytes:
        """RFC 2449 §5; USER and SASL only before login (§6.8) and where a password
        may be sent; STLS while TLS can still start (RFC 2595 §4)."""
        login_caps = ("USER", "SASL PLAIN")
        caps = [
            c
            for c in CAPABILITIES
            if c not in login_caps or (self.address is None and self.security.plaintext_ok)
        ]
        if self.security.can_starttls and self.address is None:
            caps.append("STLS")
        return (
            b"+OK capability list follows\r\n"
            + "".join(f"{c}\r\n" for c in caps).encode()
            + b".\r\n"
        )

    def _quit(self) -> bytes:
        """RFC 1939 §6: QUIT in TRANSACTION enters UPDATE and removes DELE'd mail."""
        if self.address is not None and self.mail is not None:
            doomed = [self.drop[n - 1] for n in sorted(self.deleted)]
            self.mail.expunge(INBOX, doomed)
        self.close()
        return _ok(f"{self.hostname} mxlab POP3 signing off")

    # -- AUTHORIZATION (§4, §7) ------------------------------------------------------

    def _stls(self, arg: str) -> bytes:
        """RFC 2595 §4; lines pipelined after STLS are discarded."""
        if not self.security.can_starttls:
            return _err("STLS not available")
        self.security.request_tls()
        self.user_arg, self.buffer = None, b""
        return _ok("Begin TLS negotiation")

    def _user(self, arg: str) -> bytes:
        if not self.security.plaintext_ok:  # not even the name in the clear
            return _err("[AUTH] plaintext authentication disallowed before STLS")
        if not arg:
            return _err("USER needs a name")
        self.user_arg = arg.strip()
        return _ok("send PASS")

    def _pass(self, arg: str) -> bytes:
        if not self.security.plaintext_ok:
            return _err("[AUTH] plaintext authentication disallowed before STLS")
        if self.user_arg is None:
            return _err("USER first")
        user, self.user_arg = self.user_arg, None
        return self._finish_login(self.auth.login(user, arg))

    def _auth(self, arg: str) -> bytes:
        mech, _, initial = arg.strip().partition(" ")
        if not mech:
            return b"+OK\r\nPLAIN\r\n.\r\n"
        if mech.upper() != "PLAIN":
            return _err("unsupported SASL mechanism")
        if not self.security.plaintext_ok:
            return _err("[AUTH] plaintext authentication disallowed before STLS")
        if not initial:
            self.pending_sasl = True
            return b"+ \r\n"
        if initial == "=":  # RFC 5034 §4: empty initial response
            return self._finish_login(self.auth.plain(b""))
        return self._finish_login(self.auth.plain(initial.encode()))

    def _finish_login(self, address: str | None) -> bytes:
        emit(self.node, "pop3_login", user=address, ok=address is not None)
        if address is None:
            if self.auth.failed(self.security):  # answered after its delay, then closed
                self.closed = True
                return _err("[AUTH] invalid user name or password; too many failures, bye")
            return _err("[AUTH] invalid user name or password")
        if address in self.store.pop3_locked:  # RFC 2449 §8.1.1
            return _err("[IN-USE] maildrop already locked by another session")
        if not self.store.open_session(address):  # RFC 3206 §4
            return _err("[SYS/TEMP] too many sessions for this user, try later")
        self.store.pop3_locked.add(address)
        self.address = address
        self.mail = self.store.user(address)
        info = self.mail.mailbox(INBOX)
        self.uidvalidity = info.uidvalidity if info else 0
        self.drop = self.mail.messages(INBOX)
        self.deleted = set()
        return _ok(f"maildrop has {len(self.drop)} messages")

    # -- TRANSACTION (§5) ------------------------------------------------------------

    def _msg(self, arg: str) -> tuple[int, MessageInfo]:
        n = int(arg.split()[0])
        if n < 1 or n > len(self.drop) or n in self.deleted:
            raise IndexError(n)
        return n, self.drop[n - 1]

    def _live(self) -> list[tuple[int, MessageInfo]]:
        return [(n, m) for n, m in enumerate(self.drop, 1) if n not in self.deleted]

    def _stat(self, arg: str) -> bytes:
        live = self._live()
        return _ok(f"{len(live)} {sum(m.size for _, m in live)}")

    def _list(self, arg: str) -> bytes:
        return self._listing(arg, lambda m: str(m.size))

    def _uidl(self, arg: str) -> bytes:
        """RFC 1939 §7: stable across sessions, from UIDVALIDITY and the IMAP UID."""
        return self._listing(arg, lambda m: f"{self.uidvalidity}.{m.uid}")

    def _listing(self, arg: str, value: Callable[[MessageInfo], str]) -> bytes:
        if arg.strip():
            try:
                n, m = self._msg(arg)
            except (ValueError, IndexError):
                return _err("no such message")
            return _ok(f"{n} {value(m)}")
        lines = "".join(f"{n} {value(m)}\r\n" for n, m in self._live())
        return b"+OK\r\n" + lines.encode() + b".\r\n"

    def _read(self, m: MessageInfo) -> bytes | None:
        assert self.mail is not None
        try:
            return self.mail.read(INBOX, m.path)
        except FileNotFoundError:
            return None

    def _retr(self, arg: str) -> bytes:
        try:
            _, m = self._msg(arg)
        except (ValueError, IndexError):
            return _err("no such message")
        data = self._read(m)
        if data is None:
            return _err("message was removed by another session")
        return _ok(f"{len(data)} octets") + byte_stuff(data)

    def _top(self, arg: str) -> bytes:
        parts = arg.split()
        try:
            _, m = self._msg(parts[0])
            lines = int(parts[1])
        except (ValueError, IndexError):
            return _err("usage: TOP msg n")
        if lines < 0:
            return _err("usage: TOP msg n")
        data = self._read(m)
        if data is None:
            return _err("message was removed by another session")
        return _ok() + byte_stuff(top_of(data, lines))

    def _dele(self, arg: str) -> bytes:
        try:
            n, _ = self._msg(arg)
        except (ValueError, IndexError):
            return _err("no such message")
        self.deleted.add(n)
        return _ok(f"message {n} deleted")

    def _rset(self, arg: str) -> bytes:
        self.deleted.clear()
        return _ok(f"maildrop has {len(self.drop)} messages")

    _authorization = {"USER": _user, "PASS": _pass, "AUTH": _auth, "STLS": _stls}
    _transaction = {
        "STAT": _stat,
        "LIST": _list,
        "UIDL": _uidl,
        "RETR": _retr,
        "TOP": _top,
        "DELE": _dele,
        "RSET": _rset,
    }
