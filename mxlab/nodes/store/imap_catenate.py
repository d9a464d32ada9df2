"""CATENATE (RFC 4469): an APPENDed message built from literal text and IMAP URLs
(RFC 5092) naming messages or parts the user already has — what a client sends to
forward an attachment without downloading it. Sans-IO: the caller resolves URLs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from mxlab.nodes.store.imap_parser import Literal, ParseError, Token, as_text

# RFC 5092 §7 (the server-relative forms): [imap://authority]/box[;UIDVALIDITY=n]/;UID=n
# [/;SECTION=s]; or relative to the selected mailbox: ;UID=n[/;SECTION=s]
_URL = re.compile(
    r"^(?:imap://[^/]*)?(?:/(?P<box>[^;]+)(?:;UIDVALIDITY=(?P<validity>\d+))?/)?"
    r";UID=(?P<uid>\d+)(?:/;SECTION=(?P<section>[^/;]+))?$",
    re.I,
)


class BadUrl(ValueError):
    """RFC 4469 §5: NO [BADURL url] — the URL names nothing this user can read."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@dataclass(frozen=True)
class MessageUrl:
    mailbox: str | None  # None: the selected mailbox
    uidvalidity: int | None
    uid: int
    section: str  # "" for the whole message


def parse_url(url: str) -> MessageUrl:
    m = _URL.match(url)
    if m is None:
        raise BadUrl(url)
    box, validity = m.group("box"), m.group("validity")
    return MessageUrl(
        unquote(box) if box else None,
        int(validity) if validity else None,
        int(m.group("uid")),
        unquote(m.group("section") or ""),
    )


def catenate(parts: Token, resolve: Callable[[MessageUrl], bytes]) -> bytes:
    """``(TEXT literal URL "url" ...)`` (RFC 4469 §5) joined in order; ``resolve``
    raises BadUrl for a URL it cannot serve."""
    if not isinstance(parts, list) or not parts or len(parts) % 2:
        raise ParseError("CATENATE needs (TEXT literal / URL url ...)")
    out = bytearray()
    for kind, value in zip(parts[::2], parts[1::2], strict=True):
        word = as_text(kind).upper()
        if word == "TEXT" and isinstance(value, Literal):
            out += value
        elif word == "URL":
            url = as_text(value)
            try:
                out += resolve(parse_url(url))
            except BadUrl:
                raise BadUrl(url) from None  # the reply names the URL as the client wrote it
        else:
            raise ParseError("CATENATE parts are TEXT literal or URL url")
    return bytes(out)
