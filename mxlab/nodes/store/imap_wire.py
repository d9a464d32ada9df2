"""How IMAP server data is written (RFC 3501 §4): strings quoted when they can be,
literals when they cannot, NIL for absent values, parenthesized lists."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def literal8(data: bytes) -> bytes:
    """RFC 3516 §4.2: ``~{n}`` for content that may hold NUL; a plain literal when
    it holds none, as every client reads those."""
    return b"~{%d}\r\n" % len(data) + data if b"\0" in data else literal(data)


def string(value: bytes | str) -> bytes:
    """A quoted string (§4.3) for short 7-bit text without CR/LF, else a literal."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(data) < 1024 and not any(c > 0x7E or c in (0x0D, 0x0A, 0) for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def nstring(value: bytes | str | None) -> bytes:
    return b"NIL" if value is None else string(value)


def plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


@functools.lru_cache(maxsize=256)
def flag_list(flags: frozenset[str]) -> bytes:
    """Cached: a mailbox holds few distinct flag sets, and FETCH FLAGS is hot."""
    return plist(f.encode() for f in sorted(flags))


def internal_date(ts: float) -> bytes:
    """date-time (§9): "17-Jul-1996 02:44:25 +0000"."""
    d = datetime.fromtimestamp(ts, UTC)
    return f'"{d.day:2d}-{_MONTHS[d.month - 1]}-{d.year:04d} {d:%H:%M:%S} +0000"'.encode()


def parse_date(text: str) -> datetime:
    """date (§9): "1-Feb-1994" as a UTC midnight; ValueError when malformed."""
    day, month, year = text.split("-")
    return datetime(int(year), _MONTHS.index(month.title()) + 1, int(day), tzinfo=UTC)


def parse_date_time(text: str) -> float:
    """date-time (§9) for APPEND: "17-Jul-1996 02:44:25 -0700"."""
    return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()
