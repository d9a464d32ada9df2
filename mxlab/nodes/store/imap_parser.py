"""IMAP command syntax (RFC 3501 §9), sans-IO: gather one command's line and literals
from the byte stream (with continuation requests for synchronising literals, §7.5,
and none for LITERAL+, RFC 7888), then tokenize it into atoms, strings and lists.

Tokens: ``str`` for atoms (NIL, flags, sequence sets, fetch items with their
brackets), ``bytes`` for quoted strings, ``Literal`` (a bytes) for literals — so
APPEND can tell a message from a quoted date — and ``list`` for parenthesized lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Token = str | bytes | list["Token"]

_LITERAL_AT_END = re.compile(rb"\{(\d{1,12})(\+?)\}$")
_LITERAL_HEAD = re.compile(rb"\{(\d+)\+?\}\r\n")
_ATOM_END = frozenset(b' ()\r\n{"')
_TAG = re.compile(rb"^[!#$&',-./0-9:-Z^-z|~]+")  # astring chars minus "+" (§9 tag)


class Literal(bytes):
    """A literal's octets; ``binary`` for RFC 3516's literal8 (``~{n}``), which may
    hold NUL."""

    binary = False


class Literal8(Literal):
    binary = True


class ParseError(ValueError):
    """The command is not valid IMAP syntax; answered with BAD."""


@dataclass(frozen=True)
class Command:
    """One complete command line, literals included."""

    data: bytes


@dataclass(frozen=True)
class Continue:
    """The client waits for "+" before sending a synchronising literal (§7.5)."""


@dataclass(frozen=True)
class Refused:
    """A line or literal over the limits; ``fatal`` when the client will send the
    literal regardless (LITERAL+) so the connection cannot be resynchronised."""

    tag: str
    reason: str
    fatal: bool = False


Event = Command | Continue | Refused


def tag_of(line: bytes) -> str:
    m = _TAG.match(line)
    return m.group(0).decode() if m else "*"


class CommandReader:
    """Cuts the byte stream into commands; keeps no state but the partial command."""

    def __init__(self, max_line: int = 64 * 1024, max_literal: int = 64 * 1024 * 1024) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.buffer = bytearray()
        self.current = bytearray()  # the command gathered so far
        self.need = 0  # literal octets still to come
        self.discarding = False  # skipping the rest of an over-long line

    def feed(self, data: bytes) -> list[Event]:
        self.buffer += data
        events: list[Event] = []
        while True:
            if self.need:
                take = min(self.need, len(self.buffer))
                self.current += self.buffer[:take]
                del self.buffer[:take]
                self.need -= take
                if self.need:
                    break
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                if len(self.buffer) > self.max_line:
                    if not self.discarding:
                        events.append(
                            Refused(tag_of(bytes(self.current or self.buffer)), "line too long")
                        )
                    self.discarding = True
                    self.current.clear()
                    self.buffer.clear()
                break
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            if self.discarding:
                self.discarding = False
                continue
            if len(line) > self.max_line:  # the line arrived whole, CRLF and all
                events.append(Refused(tag_of(bytes(self.current or line)), "line too long"))
                self.current.clear()
                continue
            if len(self.current) + len(line) > self.max_line + self.max_literal:
                events.append(Refused(tag_of(bytes(self.current or line)), "command too long"))
                self.current.clear()
                continue
            m = _LITERAL_AT_END.search(line)
            if m is None:
                self.current += line
                events.append(Command(bytes(self.current)))
                self.current.clear()
                continue
            size, plus = int(m.group(1)), bool(m.group(2))
            if size > self.max_literal:
                tag = tag_of(bytes(self.current or line))
                self.current.clear()
                events.append(Refused(tag, "literal too large", fatal=plus))
                if plus:
                    break
                continue
            self.current += line + b"\r\n"
            self.need = size
            if not plus:
                events.append(Continue())
        return events


def _quoted(data: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    pos += 1
    while pos < len(data):
        c = data[pos]
        if c == 0x5C and pos + 1 < len(data):  # backslash escapes " and \ (§9 quoted)
            out.append(data[pos + 1])
            pos += 2
        elif c == 0x22:
            return bytes(out), pos + 1
        elif c in (0x0D, 0x0A):
            break
        else:
            out.append(c)
            pos += 1
    raise ParseError("unterminated quoted string")


def _atom(data: bytes, pos: int) -> tuple[str, int]:
    """An atom; a "[" opens a section that may hold spaces and parentheses
    (``BODY[HEADER.FIELDS (From)]<0.10>``), which closes at the matching "]". A "["
    that never closes is an ordinary atom character (§9 ATOM-CHAR: ``SELECT foo[bar``)."""
    start = pos
    depth = 0
    while pos < len(data):
        c = data[pos]
        if c == 0x5B:
            depth += 1
        elif c == 0x5D and depth:
            depth -= 1
        elif depth == 0 and c in _ATOM_END:
            break
        pos += 1
    if depth:
        pos = start
        while pos < len(data) and data[pos] not in _ATOM_END:
            pos += 1
    if pos == start:
        raise ParseError("bad atom")
    return data[start:pos].decode("utf-8", "surrogateescape"), pos


def tokenize(data: bytes) -> list[Token]:
    """The tokens of one command (without its final CRLF)."""
    stack: list[list[Token]] = [[]]
    pos = 0
    while pos < len(data):
        c = data[pos]
        if c == 0x20:
            pos += 1
        elif c == 0x28:
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
        elif c == 0x29:
            if len(stack) == 1:
                raise ParseError("unbalanced )")
            stack.pop()
            pos += 1
        elif c == 0x22:
            s, pos = _quoted(data, pos)
            stack[-1].append(s)
        elif c == 0x7B or (c == 0x7E and data[pos + 1 : pos + 2] == b"{"):
            binary = c == 0x7E  # RFC 3516 §4.1 literal8
            m = _LITERAL_HEAD.match(data, pos + binary)
            if m is None:
                raise ParseError("bad literal")
            size = int(m.group(1))
            start = m.end()
            if start + size > len(data):
                raise ParseError("short literal")
            stack[-1].append((Literal8 if binary else Literal)(data[start : start + size]))
            pos = start + size
        else:
            atom, pos = _atom(data, pos)
            stack[-1].append(atom)
    if len(stack) != 1:
        raise ParseError("unbalanced (")
    return stack[0]


def as_text(token: Token) -> str:
    """An astring argument (atom or string) as text; lists are a syntax error."""
    if isinstance(token, list):
        raise ParseError("string expected")
    if isinstance(token, bytes):
        return token.decode("utf-8", "surrogateescape")
    return token


# -- sequence sets (§9 sequence-set) -------------------------------------------------

Ranges = list[tuple[int, int]]
_SEQ = re.compile(r"^(\d+|\*)(?::(\d+|\*))?$")


def parse_sequence_set(text: str, largest: int) -> Ranges:
    """ "1:3,5,7:*" -> [(1, 3), (5, 5), (7, largest)]; ``*`` is the largest number in
    use, and n:m means the same as m:n (§6.4.8)."""
    ranges: Ranges = []
    for piece in text.split(","):
        m = _SEQ.match(piece)
        if m is None:
            raise ParseError(f"bad sequence set {text[:40]!r}")
        lo_s, hi_s = m.group(1), m.group(2) or m.group(1)
        lo = largest if lo_s == "*" else int(lo_s)
        hi = largest if hi_s == "*" else int(hi_s)
        if (lo_s != "*" and lo == 0) or (hi_s != "*" and hi == 0):
            raise ParseError("0 is not a valid message number")
        ranges.append((min(lo, hi), max(lo, hi)))
    return ranges


def format_uid_set(uids: list[int]) -> str:
    """Compact ascending ranges for UIDPLUS responses (RFC 4315 §3)."""
    parts: list[str] = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)
