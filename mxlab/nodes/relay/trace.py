"""Trace fields and header checks on the raw message bytes (never re-encoded)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime

from mxlab.nodes.message import header_block

_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")


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
