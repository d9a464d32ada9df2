"""SORT (RFC 5256 §3): the sort keys of a message — base subject (§2.1), first
address's mailbox, sent date — and the ordering they give."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime

from mxlab.nodes.store.imap_mime import Part
from mxlab.nodes.store.imap_parser import ParseError, Token, as_text
from mxlab.nodes.store.index import MessageInfo

SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"}
_BLOB = r"\[[^\[\]]*\]\s*"
_TRAILER = re.compile(r"(\s|\(fwd\))+$", re.I)  # §5 subj-trailer
_LEADER = re.compile(rf"^(\s*({_BLOB})*(re|fwd?)\s*({_BLOB})?:\s*)", re.I)  # subj-refwd
_LEADING_BLOB = re.compile(rf"^\s*{_BLOB}")
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.I | re.S)


def base_subject(raw: str | None) -> tuple[str, bool]:
    """RFC 5256 §2.1: the subject without "Re:", "Fwd:", "[blob]" leaders, "(fwd)"
    trailers and "[fwd: ...]" wrappers, upper-cased for i;ascii-casemap; and whether
    anything reply-like was taken off (the "is a reply" of THREAD §2.2 step 5)."""
    if not raw:
        return "", False
    try:
        text = str(make_header(decode_header(raw)))  # (1) encoded words to UTF-8
    except (ValueError, LookupError):
        text = raw
    text = " ".join(text.split())
    stripped = False
    while True:
        before = text
        text, n = _TRAILER.subn("", text)  # (2)
        stripped |= bool(n and "fwd" in before[len(text) :].lower())
        while True:  # (3)-(5)
            m = _LEADER.match(text)
            if m:
                text, stripped = text[m.end() :], True
                continue
            blob = _LEADING_BLOB.match(text)
            if blob and text[blob.end() :]:
                text = text[blob.end() :]
                continue
            break
        wrapped = _FWD_WRAP.match(text)  # (6)
        if wrapped:
            text, stripped = wrapped.group(1).strip(), True
        if text == before:
            return text.upper(), stripped


def sent_date(part: Part, fallback: float) -> float:
    """§2.2: the Date header as UTC seconds, or the internal date when it has none."""
    value = part.headers.get("Date")
    try:
        return parsedate_to_datetime(value).timestamp() if value else fallback
    except (TypeError, ValueError, OverflowError):
        return fallback


def first_mailbox(part: Part, field: str) -> str:
    """§3: the addr-mailbox (local part) of the first address, for CC/FROM/TO."""
    values = part.headers.get_all(field) or []
    for _, addr in getaddresses([str(v).replace("\r\n", "") for v in values]):
        if addr:
            return addr.partition("@")[0].upper()
    return ""


def parse_criteria(token: Token) -> list[tuple[str, bool]]:
    """``(REVERSE DATE SUBJECT)`` -> [("DATE", True), ("SUBJECT", False)]."""
    if not isinstance(token, list) or not token:
        raise ParseError("SORT needs a list of sort criteria")
    keys: list[tuple[str, bool]] = []
    reverse = False
    for t in token:
        word = as_text(t).upper()
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise ParseError(f"unknown sort criterion {word[:20]}")
        keys.append((word, reverse))
        reverse = False
    if reverse or not keys:
        raise ParseError("REVERSE needs a sort key after it")
    return keys


def sort_key(
    criteria: list[tuple[str, bool]], seq: int, info: MessageInfo, part: Callable[[], Part]
) -> tuple[object, ...]:
    """A tuple that orders messages as ``criteria`` say; ties go by sequence number."""
    key: list[object] = []
    for name, reverse in criteria:
        value: object
        if name == "ARRIVAL":
            value = info.internaldate
        elif name == "SIZE":
            value = info.size
        elif name == "DATE":
            value = sent_date(part(), info.internaldate)
        elif name == "SUBJECT":
            value = base_subject(part().headers.get("Subject"))[0]
        else:
            value = first_mailbox(part(), name.lower())
        key.append(_Reversed(value) if reverse else value)
    key.append(seq)
    return tuple(key)


class _Reversed:
    """Wraps a key so that it sorts descending inside an ascending tuple sort."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)
