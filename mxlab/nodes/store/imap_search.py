"""SEARCH criteria (RFC 3501 §6.4.4, WITHIN RFC 5032, the saved result "$" RFC 5182)
compiled to predicates over messages — a message's file is read only when a criterion
needs its header or text — and the ESEARCH result options (RFC 4731)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

from mxlab.nodes.store.imap_mime import Part, parse, raw_fields
from mxlab.nodes.store.imap_parser import (
    ParseError,
    Ranges,
    Token,
    as_text,
    format_uid_set,
    parse_sequence_set,
)
from mxlab.nodes.store.imap_wire import parse_date
from mxlab.nodes.store.index import MessageInfo

CHARSETS = {"US-ASCII", "UTF-8"}


class BadCharset(ParseError):
    """§6.4.4: NO [BADCHARSET] for a charset we cannot search in."""


@dataclass
class Candidate:
    seq: int
    info: MessageInfo
    recent: bool
    load: Callable[[MessageInfo], bytes]  # read only when a criterion needs the text
    _part: Part | None = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)

    @property
    def part(self) -> Part:
        if self._part is None:
            self._part = parse(self.load(self.info))
        return self._part

    @property
    def decoded_text(self) -> str:
        """The text parts with transfer encoding and charset undone (RFC 2045 §6),
        lower-cased: what a user means by a word "in the body"."""
        if self._text is None:
            texts = []
            for leaf in message_from_bytes(self.part.raw, policy=compat32).walk():
                if leaf.is_multipart() or leaf.get_content_maintype() != "text":
                    continue
                payload = leaf.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    continue
                try:
                    texts.append(payload.decode(leaf.get_content_charset() or "ascii", "replace"))
                except LookupError:  # an unknown charset: the bytes as Latin-1
                    texts.append(payload.decode("latin-1"))
            self._text = "\n".join(texts).lower()
        return self._text


Predicate = Callable[[Candidate], bool]


def _in(ranges: Ranges, n: int) -> bool:
    return any(lo <= n <= hi for lo, hi in ranges)


def _contains(haystack: bytes, needle: bytes) -> bool:
    return needle.lower() in haystack.lower()


def _header_has(c: Candidate, name: str, needle: bytes) -> bool:
    """Substring match on the field, raw or decoded (RFC 2047), case-insensitive."""
    for fname, raw in raw_fields(c.part.header):
        if fname != name:
            continue
        value = raw.split(b":", 1)[1] if b":" in raw else b""
        if not needle or _contains(value, needle):
            return True
        try:
            text = str(make_header(decode_header(value.decode("utf-8", "replace"))))
        except (ValueError, LookupError):
            continue
        if needle.decode("utf-8", "replace").lower() in text.lower():
            return True
    return False


def _address_has(c: Candidate, name: str, needle: bytes) -> bool:
    """FROM/TO/CC/BCC (§6.4.4): the field as written, or any of its addresses as
    ``Display Name <box@host>``, ``box@host`` or the name alone, with comments,
    quotes and folding taken out (RFC 5322 §3.4) and the name decoded (RFC 2047)."""
    if _header_has(c, name, needle):
        return True
    want = needle.decode("utf-8", "replace").lower()
    values = [
        raw.split(b":", 1)[1].decode("utf-8", "replace").replace("\r\n", "")
        for fname, raw in raw_fields(c.part.header)
        if fname == name and b":" in raw
    ]
    for display, addr in getaddresses(values):
        with contextlib.suppress(ValueError, LookupError):
            display = str(make_header(decode_header(display)))
        forms = (addr, display, f"{display} <{addr}>", f'"{display}" <{addr}>')
        if any(want in form.lower() for form in forms):
            return True
    return False


def _decoded_has(c: Candidate, needle: bytes) -> bool:
    return needle.decode("utf-8", "replace").lower() in c.decoded_text


def _sent_date(c: Candidate) -> datetime | None:
    value = c.part.headers.get("Date")
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def _day(ts: float) -> datetime:
    d = datetime.fromtimestamp(ts, UTC)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _flag(name: str, want: bool) -> Predicate:
    return lambda c: (name in c.info.flags) == want


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_ADDRESS_KEYS = {"FROM", "TO", "CC", "BCC"}


RETURN_OPTIONS = {"MIN", "MAX", "ALL", "COUNT", "SAVE"}


def parse_return(args: list[Token]) -> tuple[set[str] | None, list[Token]]:
    """RFC 4731 §3.1: ``RETURN (options)`` before the criteria; ``RETURN ()`` means
    ALL. None without RETURN (a plain SEARCH response is due)."""
    if not args or not isinstance(args[0], str) or args[0].upper() != "RETURN":
        return None, args
    if len(args) < 2 or not isinstance(args[1], list):
        raise ParseError("RETURN needs a list of options")
    options = {as_text(o).upper() for o in args[1]}
    if options - RETURN_OPTIONS:
        raise ParseError("unknown RETURN option")
    return options or {"ALL"}, args[2:]


def to_save(options: set[str], found: list[int]) -> list[int]:
    """RFC 5182 §2.1: SAVE with only MIN and/or MAX keeps just those."""
    if options & {"ALL", "COUNT"} or not options & {"MIN", "MAX"} or not found:
        return found
    kept = {found[0]} if "MIN" in options else set()
    return sorted(kept | ({found[-1]} if "MAX" in options else set()))


def esearch(tag: str, uid: bool, options: set[str], found: list[int], modseq: int) -> str | None:
    """``ESEARCH (TAG "t") [UID] MIN a MAX b COUNT n ALL set`` (RFC 4731 §3.1); None
    for SAVE alone, which answers nothing (RFC 5182 §2.1). ``found`` is ascending."""
    if options == {"SAVE"}:
        return None
    parts = [f'ESEARCH (TAG "{tag}")', *(["UID"] if uid else [])]
    if found:
        parts += [f"MIN {found[0]}"] * ("MIN" in options)
        parts += [f"MAX {found[-1]}"] * ("MAX" in options)
        parts += [f"ALL {format_uid_set(found)}"] * ("ALL" in options)
    parts += [f"COUNT {len(found)}"] * ("COUNT" in options)
    if modseq and found:
        parts.append(f"MODSEQ {modseq}")  # RFC 7162 §3.1.5
    return " ".join(parts)


class SearchParser:
    """Turns the criteria tokens into one predicate (all criteria AND-ed). ``saved``
    is the session's saved result, as UIDs, for "$" (RFC 5182)."""

    def __init__(
        self,
        tokens: list[Token],
        largest_seq: int,
        largest_uid: int,
        saved: frozenset[int] = frozenset(),
    ) -> None:
        self.tokens = tokens
        self.pos = 0
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid
        self.saved = saved
        self.modseq = False  # a MODSEQ criterion was used (RFC 7162 §3.1.5)

    def parse(self) -> Predicate:
        if self._peek_atom() == "CHARSET":
            self.pos += 1
            charset = as_text(self._next()).upper()
            if charset not in CHARSETS:
                raise BadCharset(charset)
        preds = []
        while self.pos < len(self.tokens):
            preds.append(self._key())
        if not preds:
            raise ParseError("SEARCH needs a criterion")
        if len(preds) == 1:  # the usual SEARCH UNSEEN: no generator per message
            return preds[0]
        return lambda c: all(p(c) for p in preds)

    def _peek_atom(self) -> str | None:
        if self.pos < len(self.tokens) and isinstance(self.tokens[self.pos], str):
            return str(self.tokens[self.pos]).upper()
        return None

    def _next(self) -> Token:
        if self.pos >= len(self.tokens):
            raise ParseError("SEARCH criterion incomplete")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _arg(self) -> bytes:
        return as_text(self._next()).encode("utf-8", "surrogateescape")

    def _number(self) -> int:
        try:
            return int(as_text(self._next()))
        except ValueError:
            raise ParseError("number expected") from None

    def _key(self) -> Predicate:
        token = self._next()
        if isinstance(token, list):
            sub = SearchParser(token, self.largest_seq, self.largest_uid, self.saved)
            preds = []
            while sub.pos < len(token):
                preds.append(sub._key())
            self.modseq |= sub.modseq
            if not preds:
                raise ParseError("empty search list")
            return lambda c: all(p(c) for p in preds)
        if isinstance(token, bytes):
            raise ParseError("search key expected")
        key = token.upper()
        if key == "ALL":
            return lambda c: True
        if key in _FLAG_KEYS:
            return _flag(*_FLAG_KEYS[key])
        if key == "RECENT":
            return lambda c: c.recent
        if key == "OLD":
            return lambda c: not c.recent
        if key == "NEW":
            return lambda c: c.recent and "\\Seen" not in c.info.flags
        if key in ("KEYWORD", "UNKEYWORD"):
            word = as_text(self._next())
            return _flag(word, key == "KEYWORD")
        if key in _ADDRESS_KEYS:
            needle = self._arg()
            name = key.lower()
            return lambda c: _address_has(c, name, needle)
        if key == "SUBJECT":
            needle = self._arg()
            return lambda c: _header_has(c, "subject", needle)
        if key == "HEADER":
            name = as_text(self._next()).lower()
            needle = self._arg()
            return lambda c: _header_has(c, name, needle)
        if key == "BODY":
            needle = self._arg()
            return lambda c: _contains(c.part.body, needle) or _decoded_has(c, needle)
        if key == "TEXT":
            needle = self._arg()
            return lambda c: (
                _contains(c.part.raw, needle)
                or _decoded_has(c, needle)
                or any(_header_has(c, name, needle) for name, _ in raw_fields(c.part.header))
            )
        if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            return self._date_key(key)
        if key == "LARGER":
            n = self._number()
            return lambda c: c.info.size > n
        if key == "SMALLER":
            n = self._number()
            return lambda c: c.info.size < n
        if key == "MODSEQ":
            return self._modseq_key()
        if key in ("OLDER", "YOUNGER"):  # RFC 5032 §3: seconds, by internal date
            limit = time.time() - self._number()
            if key == "OLDER":
                return lambda c: c.info.internaldate <= limit
            return lambda c: c.info.internaldate >= limit
        if key == "$" or (key == "UID" and self._peek_atom() == "$"):  # RFC 5182 §2.1
            self.pos += key == "UID"
            saved = self.saved
            return lambda c: c.info.uid in saved
        if key == "UID":
            ranges = parse_sequence_set(as_text(self._next()), self.largest_uid)
            return lambda c: _in(ranges, c.info.uid)
        if key == "NOT":
            inner = self._key()
            return lambda c: not inner(c)
        if key == "OR":
            left, right = self._key(), self._key()
            return lambda c: left(c) or right(c)
        ranges = parse_sequence_set(token, self.largest_seq)
        return lambda c: _in(ranges, c.seq)

    def _modseq_key(self) -> Predicate:
        """RFC 7162 §3.1.5: MODSEQ [entry-name entry-type] n; we keep one mod-sequence
        per message, so the entry (a flag's) is parsed and then ignored."""
        args = [as_text(self._next())]
        if not args[0].isdigit():
            args += [as_text(self._next()), as_text(self._next())]
            if args[1].lower() not in ("priv", "shared", "all"):
                raise ParseError("bad MODSEQ entry type")
        if not args[-1].isdigit():
            raise ParseError("bad mod-sequence")
        floor = int(args[-1])
        self.modseq = True
        return lambda c: c.info.modseq >= floor

    def _date_key(self, key: str) -> Predicate:
        try:
            day = parse_date(as_text(self._next()))
        except ValueError:
            raise ParseError("bad date") from None
        sent = key.startswith("SENT")
        op = key.removeprefix("SENT")

        def when(c: Candidate) -> datetime | None:
            if not sent:
                return _day(c.info.internaldate)
            d = _sent_date(c)
            if d is None:
                return None
            # §6.4.4: compare dates only, disregarding time and timezone
            return datetime(d.year, d.month, d.day, tzinfo=UTC)

        def check(c: Candidate) -> bool:
            d = when(c)
            if d is None:
                return False
            return d < day if op == "BEFORE" else d == day if op == "ON" else d >= day

        return check
