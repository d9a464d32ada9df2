"""The ESMTP extensions aiosmtpd lacks, added on its SMTP class rather than by
rewriting SMTP: enhanced status codes on its own replies (RFC 2034), CHUNKING/BDAT
(RFC 3030), DSN parameters (RFC 3461), refusing source routes, a DATA reader that
takes the message in blocks instead of line by line, and per-client connection and
error budgets."""

from __future__ import annotations

import asyncio
import functools
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, syntax

from mxlab.nodes.login_limits import LoginAttempts
from mxlab.nodes.relay.policy import SOURCE_ROUTE_DENIED, is_source_route
from mxlab.nodes.replies import with_enhanced_code
from mxlab.nodes.smtp_session import client_ip

_DSN_PARAM = re.compile(r"[ \t]+(RET|ENVID|NOTIFY|ORCPT)=(\S*)", re.I)
_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}
_DISCARD_PIECE = 1 << 16
_DOT_CRLF = b".\r\n"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# RFC 5321 §4.1.2 Path with a dot-atom local part and a plain domain, then the rest
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_PATH = re.compile(rf"\s*<({_ATOM}(?:\.{_ATOM})*@{_DOMAIN})>\s*(.*)\Z", re.S)
READ_LIMIT = 1 << 16  # bytes the reader buffers before a DATA block is taken
QUEUE_UNAVAILABLE = "451 4.3.0 cannot queue the message now, try again later"
_TOO_BIG = "552 5.3.4 message size exceeds fixed maximum message size"
_CARRY_MAX = 1 << 12  # an unfinished line longer than this is written out in parts
HARD_ERROR_LIMIT = 20  # error replies before we hang up (Postfix's smtpd_hard_error_limit)
# RFC 3207 §4 and Postfix's smtpd_tls_auth_only: no password before TLS
AUTH_NEEDS_TLS = "530 5.7.0 Must issue a STARTTLS command first"
STARTTLS_READY = "220 2.0.0 Ready to start TLS"  # RFC 3207 §4 with RFC 2034's code
CONNECTION_LIMIT = 50  # open sessions per client (Postfix's smtpd_client_connection_count_limit)


def take_dsn_params(arg: str, names: set[str]) -> tuple[str, dict[str, str]] | str:
    """Split RFC 3461 parameters off a MAIL/RCPT argument (aiosmtpd would refuse them
    and upper-case their values); a str result is the syntax error reply."""
    found: dict[str, str] = {}
    errors: list[str] = []

    def grab(m: re.Match[str]) -> str:
        name, value = m.group(1).upper(), m.group(2)
        if name not in names:
            return m.group(0)
        if name in found or not value:
            errors.append(name)
        found[name] = value
        return ""

    rest = _DSN_PARAM.sub(grab, arg)
    notify = set(found.get("NOTIFY", "FAILURE").upper().split(","))
    if (
        errors
        or found.get("RET", "FULL").upper() not in ("FULL", "HDRS")
        or not (notify == {"NEVER"} or notify <= _NOTIFY)
        or ";" not in found.get("ORCPT", ";")
    ):
        return "501 5.5.4 bad DSN parameter (RFC 3461)"
    return rest, found


class DataSink(Protocol):
    """Where the message goes as it is read: the handler's spool file."""

    def write(self, block: bytes) -> None: ...

    def discard(self) -> None: ...


def _unstuff(lines: bytes, at_line_start: bool) -> bytes:
    """RFC 5321 §4.5.2: a line's leading dot was doubled by the client."""
    if at_line_start and lines[:1] == b".":
        lines = lines[1:]
    return lines.replace(b"\r\n.", b"\r\n")


async def read_data(
    reader: asyncio.StreamReader, limit: int | None, out: Callable[[bytes], None]
) -> tuple[str | None, bool]:
    """Stream the message after DATA, up to the lone dot (RFC 5321 §4.1.1.4), into
    ``out`` with dot-stuffing undone (§4.5.2); the result is an error reply or None,
    and whether a dot was taken off a line: if not, no line of the message begins
    with a dot, and sending it on needs no stuffing (a pass over it saved).
    It reads in blocks, not lines; only a dot after CRLF ends the data, so a bare LF
    or CR before ".\r\n" cannot end it (the smuggling trick, §2.3.8). Each block is
    cut after its last CRLF and the rest carried into the next, so a stuffed dot is
    recognised wherever the blocks split. SIZE is enforced while reading (RFC 1870
    §6): past the limit the rest is read and dropped."""
    size = 0  # bytes of the message, dot-stuffing undone (RFC 1870 §3 counts so)
    tail = b"\r\n"  # the DATA line ended with CRLF: the data starts on a new line
    carry = b""  # the unfinished line after the last CRLF
    at_line_start = True  # does ``carry`` begin a line?
    over = False
    dotted = False
    while True:
        try:
            piece = await reader.readuntil(_DOT_CRLF)
            found = True
        except asyncio.LimitOverrunError as exc:  # a block without ".\r\n" in it
            piece = await reader.read(exc.consumed)
            found = False
        if not piece:
            raise asyncio.IncompleteReadError(b"", None)
        window = tail + piece[-5:]
        end = found and window[-5:-3] == b"\r\n"
        tail = window[-2:]
        if over:
            if end:
                return _TOO_BIG, dotted
            continue
        text = carry + piece
        if end:
            cut = len(text) - len(_DOT_CRLF)
        else:
            cut = text.rfind(b"\r\n") + 2 if b"\r\n" in text else 0
            if cut == 0 and len(text) > _CARRY_MAX:  # a long line: pass it on in parts
                cut = len(text) - 1  # the last byte may be the CR of the line's end
        if cut:
            block = _unstuff(text[:cut], at_line_start)
            dotted = dotted or len(block) < cut
            size += len(block)
            if limit is not None and size > limit:
                over = True  # read the rest and drop it, never buffered
                if end:
                    return _TOO_BIG, dotted
            else:
                out(block)
            at_line_start = text[cut - 2 : cut] == b"\r\n"
        carry = text[cut:]
        if end:
            return None, dotted


class ConnectionBudget:
    """Open sessions per client address, shared by the relay's listeners; trusted
    clients (the relays before us) are exempt, as Postfix exempts $mynetworks."""

    def __init__(self, exempt: list[str], limit: int = CONNECTION_LIMIT) -> None:
        self.exempt = set(exempt)
        self.limit = limit
        self.open: Counter[str] = Counter()

    def admit(self, client: str) -> bool:
        if client in self.exempt:
            return True
        if self.open[client] >= self.limit:
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        if client not in self.exempt:
            self.open[client] -= 1
            if self.open[client] <= 0:
                del self.open[client]


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope plus what the extensions collect during a transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn_mail: dict[str, str] = {}  # RET, ENVID
        self.dsn_rcpt: dict[str, dict[str, str]] = {}  # address -> NOTIFY, ORCPT
        self.incoming: DataSink | None = None  # the message being received, once begun
        self.chunked_bytes = 0
        self.chunk_error = ""  # set once a chunk failed: the rest is read and dropped
        # a line of the message may begin with a dot (unknown after BDAT): the next
        # hop's copy is dot-stuffed (RFC 5321 §4.5.2), else sent as it is
        self.dot_lines = True


class _Verbs:
    """aiosmtpd's table of a connection's ``smtp_*`` methods, bound when looked up: a
    connection uses five of the twenty, and binding all of them for each one cost 2%
    of a small message's CPU. aiosmtpd calls ``get`` (each command, HELP) and
    ``items`` (HELP)."""

    __slots__ = ("_smtp", "_names")

    def __init__(self, smtp: SMTP, names: frozenset[str]) -> None:
        self._smtp = smtp
        self._names = names

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self._smtp, f"smtp_{name}") if name in self._names else default

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self._smtp, f"smtp_{name}")) for name in self._names]


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with the extensions above; the handler hooks stay the place
    where policy and queueing live."""

    _greeting_reply = False  # HELO/EHLO replies keep their plain form (RFC 2034 §3)
    envelope: RelayEnvelope
    pending_dsn: dict[str, str] = {}  # DSN parameters of the command being handled
    # The stream reader's buffer: DATA is taken in blocks of up to this size. Command
    # lines keep their own limit (command_size_limit, RFC 5321 §4.5.3.1.4).
    line_length_limit = READ_LIMIT
    budget: ConnectionBudget | None = None
    errors = 0  # error replies in this session
    login: LoginAttempts | None = None  # failed AUTHs of this session, once there is one
    login_hold = 0.0  # seconds the next 535 waits (Dovecot's auth_failure_delay)
    _held = ""  # the lines of a multi-line reply before its last one
    _deadline = 0.0  # loop time at which the session times out (aiosmtpd's timeout)

    def _create_envelope(self) -> RelayEnvelope:
        """A new transaction (RSET, EHLO, the end of one): a message left half
        received by BDAT chunks is dropped with the old one."""
        old: RelayEnvelope | None = getattr(self, "envelope", None)
        if old is not None and old.incoming is not None:
            old.incoming.discard()
        return RelayEnvelope()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd parses every path with the email header parser (a tenth of a
        millisecond); the common dot-atom form is matched here, the rest (quoted
        local parts, UTF-8, oddities) still goes to aiosmtpd."""
        m = _SIMPLE_PATH.match(arg) if arg else None
        if m is not None and not self.local_part_limit:
            return m.group(1), m.group(2)
        return super()._getaddr(arg)

    @functools.cached_property
    def _verb_names(self) -> frozenset[str]:
        """The template's verbs, found by aiosmtpd's __init__ (its clones copy this)."""
        return frozenset(self._smtp_methods)

    def clone(self) -> RelaySMTP:
        """A fresh instance for the next connection with this one's settings.
        aiosmtpd's __init__ runs inspect over the class and the handler every time
        (a third of a millisecond per connection); what it finds is the same for
        every connection of a listener, so a template instance is copied instead."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)  # settings; per-connection state is unset
        reader = asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit)
        asyncio.StreamReaderProtocol.__init__(
            new, reader, client_connected_cb=new._cb_client_connected, loop=self.loop
        )
        new._smtp_methods = _Verbs(new, self._verb_names)  # type: ignore[assignment]
        new._auth_methods = {
            name: mech._replace(method=mech.method.__func__.__get__(new))  # type: ignore[attr-defined]
            if mech.is_builtin
            else mech
            for name, mech in self._auth_methods.items()
        }
        return new

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd arms a new timer for each command (a call_later, a cancel, and a
        dead handle left in the loop's heap for the whole timeout); here each command
        only moves the deadline, and the one timer, firing before it, re-arms."""
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.when() > self._deadline:  # none yet, or too late
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_due)

    def _timeout_due(self) -> None:
        if self.loop.time() < self._deadline:  # a command came meanwhile
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_due)
        else:
            self._timeout_cb()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        implicit = self._original_transport is None and transport.get_extra_info("ssl_object")
        super().connection_made(transport)
        if implicit:
            # RFC 8314 §3.3: TLS from the first byte counts as STARTTLS done, for
            # AUTH (aiosmtpd only knows STARTTLS), EHLO and the trace's ESMTPS
            self._tls_protocol = transport  # type: ignore[assignment]
            assert self.session is not None  # made by connection_made
            self.session.ssl = {
                "ssl_object": implicit,
                "cipher": transport.get_extra_info("cipher"),
            }

    async def _handle_client(self) -> None:
        assert self.session is not None and self.transport is not None  # connected
        client = client_ip(self.session)
        if self.budget is not None and not self.budget.admit(client):
            await self.push("421 4.7.0 too many connections from your address, try later")
            self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            if self.envelope is not None and self.envelope.incoming is not None:
                self.envelope.incoming.discard()  # the client left mid-transaction
            if self.budget is not None:
                self.budget.release(client)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            if status == "220 Ready to start TLS":  # aiosmtpd's, without a status code
                status = STARTTLS_READY
            elif not self._greeting_reply:
                status = with_enhanced_code(status)
            if status[:1] in "45" and not status.startswith("421"):
                self.errors += 1
            if status.startswith("535") and self.login_hold:
                await asyncio.sleep(self.login_hold)  # a failed AUTH is answered late
                self.login_hold = 0.0
            if status[3:4] == "-":  # a multi-line reply (EHLO) goes out in one write
                self._held += status + "\r\n"
                return
            status, self._held = self._held + status, ""
        await super().push(status)  # type: ignore[type-var]
        if self.login is not None and self.login.exhausted and self.transport is not None:
            self.login = None
            await super().push("421 4.7.0 too many failed authentications, closing")
            self.transport.close()
            return
        if self.errors >= HARD_ERROR_LIMIT and self.transport is not None:
            # Postfix's hard error limit: a client that keeps failing is dropped
            self.errors = 0
            await super().push("421 4.7.0 too many errors, closing the connection")
            self.transport.close()

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._greeting_reply = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._greeting_reply = False

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._greeting_reply = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._greeting_reply = False

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """Postfix's reply to AUTH before STARTTLS where TLS is required (aiosmtpd
        says 538, which RFC 4954 keeps for mechanisms that need encryption)."""
        assert self.session is not None  # commands come from a connected client
        if self._auth_require_tls and not self._tls_protocol and self.session.extended_smtp:
            await self.push(AUTH_NEEDS_TLS)
            return
        await super().smtp_AUTH(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        taken = take_dsn_params(arg or "", {"RET", "ENVID"})
        if isinstance(taken, str):
            await self.push(taken)
            return
        arg, self.pending_dsn = taken
        await super().smtp_MAIL(arg or None)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if is_source_route((arg or "").partition(":")[2]):  # aiosmtpd drops the route
            await self.push(SOURCE_ROUTE_DENIED)
            return
        taken = take_dsn_params(arg or "", {"NOTIFY", "ORCPT"})
        if isinstance(taken, str):
            await self.push(taken)
            return
        arg, self.pending_dsn = taken
        await super().smtp_RCPT(arg or None)

    def _sink(self) -> DataSink:
        """The handler's spool for this transaction's message (RelayHandler.incoming)."""
        assert self.session is not None  # commands come from a connected client
        sink: DataSink = self.event_handler.incoming(self.session, self.envelope)
        self.envelope.incoming = sink
        return sink

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if self.envelope.incoming or self.envelope.chunk_error:
            await self.push("503 5.5.1 DATA after BDAT in one transaction (RFC 3030 §2)")
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        try:
            sink = self._sink()  # before 354: a client told to go ahead must be heard out
        except OSError:
            await self.push(QUEUE_UNAVAILABLE)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            error, self.envelope.dot_lines = await read_data(
                self._reader, self.data_size_limit, sink.write
            )
        except BaseException:
            sink.discard()  # the client left mid-message: nothing was acknowledged
            raise
        if error is not None:
            sink.discard()
            self._set_post_data_state()
            await self.push(error)
            return
        await self._message(sink)

    async def _message(self, sink: DataSink) -> None:
        """The whole message is in: the DATA hook decides (and keeps or discards the
        spooled message), the transaction ends."""
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            sink.discard()  # a no-op once the hook queued it
        self._set_post_data_state()
        if status.startswith("2"):
            self.errors = 0  # the error budget counts failures since the last message
        await self.push(status)

    @syntax("BDAT chunk-size [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030: the chunk is read whatever the verdict, so the stream stays in
        step; it goes to the spool as it arrives, and the message to the same DATA
        hook once LAST arrives."""
        parts = (arg or "").split()
        if not (0 < len(parts) <= 2 and parts[0].isdigit()) or (
            len(parts) == 2 and parts[1].upper() != "LAST"
        ):
            await self.push("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        env = self.envelope
        limit = self.data_size_limit
        if limit and env.rcpt_tos and env.chunked_bytes + size > limit:
            env.chunk_error = _TOO_BIG
            if env.incoming is not None:
                env.incoming.discard()
        # no recipients also covers no HELO and no AUTH: RCPT needs both first
        error = "503 5.5.1 Error: need RCPT command" if not env.rcpt_tos else env.chunk_error
        if error:
            await self._discard(size)
            await self.push(error)
            if last and env.rcpt_tos:  # the failed transaction ends here
                self._set_post_data_state()
            return
        try:
            sink = env.incoming or self._sink()
        except OSError:
            env.chunk_error = QUEUE_UNAVAILABLE  # this chunk and the rest are dropped
            await self._discard(size)
            await self.push(QUEUE_UNAVAILABLE)
            if last:
                self._set_post_data_state()
            return
        try:
            left = size
            while left > 0:
                block = await self._reader.readexactly(min(left, _DISCARD_PIECE))
                sink.write(block)
                left -= len(block)
        except BaseException:
            sink.discard()
            raise
        env.chunked_bytes += size
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        await self._message(sink)

    async def _discard(self, size: int) -> None:
        while size > 0:
            size -= len(await self._reader.readexactly(min(size, _DISCARD_PIECE)))
