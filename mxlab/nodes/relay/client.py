"""The relay's SMTP and LMTP client on asyncio streams. Unlike aiosmtplib it
pipelines (RFC 2920): where the server advertises PIPELINING, MAIL, every RCPT and
DATA leave in one write and their replies are read together, so a message costs two
round trips instead of three plus one per recipient. It sends the message from
memory or in blocks from the spool file, dot-stuffing as it goes (RFC 5321 §4.5.2)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable

TIMEOUT = 30.0  # per reply (RFC 5321 §4.5.3.2 allows more; a lab hop answers fast)
_READ_LIMIT = 1 << 16


class ReplyError(Exception):
    """The server refused the session (greeting, EHLO/LHLO or STARTTLS)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Disconnected(ConnectionError):
    """The server closed the connection, or sent something that is not a reply."""


def stuff(block: bytes, after: bytes) -> bytes:
    """Dot-stuff ``block`` (RFC 5321 §4.5.2). ``after`` is the last two bytes sent
    before it (b"\\r\\n" at the start of the data), so a line split between two
    blocks is stuffed too; no insertion can fall inside ``after``."""
    return (after + block).replace(b"\r\n.", b"\r\n..")[len(after) :]


class Client:
    """One SMTP or LMTP session: ``open`` it, run transactions, ``quit``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, lmtp: bool = False
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.lmtp = lmtp  # RFC 2033 §4.2: one DATA reply per accepted recipient
        self.extensions: dict[str, str] = {}  # EHLO keyword -> parameters

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        helo: str,
        source: str | None = None,
        lmtp: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> Client:
        """Connect, read the greeting, EHLO (RFC 5321 §4.1.1.1) or LHLO (RFC 2033
        §4.1), and STARTTLS (RFC 3207) where offered and ``tls`` is given."""
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(source, 0) if source else None, limit=_READ_LIMIT
            )
        client = cls(reader, writer, lmtp=lmtp)
        try:
            greeting = await client.reply()
            if not greeting.startswith("2"):
                raise ReplyError(greeting)
            await client.hello(b"LHLO" if lmtp else b"EHLO", helo)
            if tls is not None and not lmtp and client.supports("STARTTLS"):
                started = await client.command(b"STARTTLS\r\n")
                if not started.startswith("2"):
                    raise ReplyError(started)
                try:
                    async with asyncio.timeout(TIMEOUT):
                        await writer.start_tls(tls)
                except ssl.SSLCertVerificationError as exc:  # RFC 8461 §4.2, verified TLS
                    # a ValueError too, which reads as a bad address: a 4xx failure instead
                    raise ConnectionError(f"certificate not valid: {exc.verify_message}") from None
                await client.hello(b"EHLO", helo)  # RFC 3207 §4.2: forget what was said
            elif tls is not None and not lmtp and tls.verify_mode == ssl.CERT_REQUIRED:
                raise ReplyError(f"{host} offers no STARTTLS, and TLS is required (RFC 8461 §4.2)")
        except BaseException:
            client.close()
            raise
        return client

    async def hello(self, verb: bytes, name: str) -> None:
        self.writer.write(verb + b" " + name.encode("ascii") + b"\r\n")
        lines = await self._lines()
        reply = _text(lines)
        if not reply.startswith("2"):
            raise ReplyError(reply)
        self.extensions = {}
        for line in lines[1:]:
            keyword, _, params = line[4:].partition(" ")
            self.extensions[keyword.upper()] = params

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    @property
    def is_connected(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    async def _lines(self) -> list[str]:
        """One reply's lines, "250-..." to "250 ..." (RFC 5321 §4.2.1)."""
        lines: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    raw = await self.reader.readline()
                except ValueError:  # a line past the read limit
                    raise Disconnected("reply line too long") from None
                if not raw.endswith(b"\n"):
                    raise Disconnected("connection closed by the server")
                if len(raw) < 5 or not raw[:3].isdigit() or raw[3:4] not in b" -":
                    raise Disconnected(f"not an SMTP reply: {raw[:40]!r}")
                lines.append(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
                if raw[3:4] == b" ":
                    return lines

    async def reply(self) -> str:
        """The next reply as one line, "250 2.0.0 Ok"."""
        return _text(await self._lines())

    async def command(self, line: bytes) -> str:
        self.writer.write(line)
        return await self.reply()

    async def send_data(self, blocks: Iterable[bytes], *, stuffing: bool = True) -> None:
        """The message after a 354, dot-stuffed (unless the caller knows no line
        begins with a dot), then the end-of-data line, which goes in the same write
        as the last block (one send fewer per message)."""
        after = b"\r\n"
        ready = b""
        for block in blocks:
            if not block:
                continue
            if ready:
                self.writer.write(ready)
                async with asyncio.timeout(TIMEOUT):
                    await self.writer.drain()
            ready = stuff(block, after) if stuffing else block
            after = (after + block[-2:])[-2:]
        self.writer.write(ready + (b".\r\n" if after.endswith(b"\r\n") else b"\r\n.\r\n"))

    async def quit(self) -> None:
        """QUIT politely, or just close when the server does not answer."""
        try:
            async with asyncio.timeout(5):
                await self.command(b"QUIT\r\n")
        except (OSError, TimeoutError):
            pass
        self.close()

    def close(self) -> None:
        self.writer.close()


def _text(lines: list[str]) -> str:
    """A multi-line reply as one line: the code, then the texts, whitespace folded."""
    return f"{lines[0][:3]} {' '.join(' '.join(line[4:] for line in lines).split())}".rstrip()
