"""Trace fields and header checks on the raw message bytes (never re-encoded)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime

_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M)


def header_block(content: bytes) -> bytes:
    """The header section: everything before the first empty line (RFC 5322 §2.1)."""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def count_received(content: bytes) -> int:
    """Number of ``Received:`` fields, for loop detection (RFC 5321 §6.3)."""
    return sum(
        1 for line in header_block(content).split(b"\r\n") if line[:9].lower() == b"received:"
    )


MAX_LINE = 998  # RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF


def longest_line(content: bytes) -> int:
    """Length of the longest line, CRLF not counted."""
    return max(map(len, content.split(b"\r\n")), default=0)


def has_bare_line_ending(content: bytes) -> bool:
    """A CR or LF outside a CRLF pair: the raw material of SMTP smuggling, which
    RFC 5321 §2.3.8 forbids in the mail data."""
    return _BARE_EOL.search(content) is not None


def message_id(content: bytes) -> str:
    """The Message-ID field, unfolded, or "" when the message has none."""
    m = _MESSAGE_ID.search(header_block(content))
    if m is None:
        return ""
    return b" ".join(m.group(1).split()).decode("ascii", "replace")


def received_header(
    *,
    helo: str,
    client_ip: str,
    by: str,
    protocol: str,
    queue_id: str,
    rcpts: list[str],
    now: datetime | None = None,
) -> bytes:
    """The ``Received:`` line a relay prepends (RFC 5321 §4.4); the lab checker reads
    its ``by`` host to verify the route. ``for`` only names a single recipient, so
    one copy never discloses the others (RFC 5321 §7.2)."""
    stamp = format_datetime(now or datetime.now(UTC))
    for_clause = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
    return (
        f"Received: from {helo} ([{client_ip}])\r\n"
        f"\tby {by} (mxlab) with {protocol} id {queue_id}{for_clause};\r\n"
        f"\t{stamp}\r\n"
    ).encode("utf-8", "surrogateescape")


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    """The ``with`` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848 §1)."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")
