"""Trace fields and header checks on the raw message bytes (never re-encoded)."""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from mxlab.nodes.message import header_block


def count_received(content: bytes) -> int:
    """Number of ``Received:`` fields, for loop detection (RFC 5321 §6.3)."""
    return sum(
        1 for line in header_block(content).split(b"\r\n") if line[:9].lower() == b"received:"
    )


MAX_LINE = 998  # RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF
_KEEP = MAX_LINE + 2  # of an unfinished line: enough to know it is too long
_NOT_LINE_ENDS = bytes(sorted(set(range(256)) - set(b"\r\n")))
_CR_ALONE = re.compile(rb"\r[^\n]")


class LineCheck:
    """Line rules over a message that arrives in blocks split anywhere: a CR or LF
    outside a CRLF pair (the raw material of SMTP smuggling, which RFC 5321 §2.3.8
    forbids in the mail data) and a line longer than §4.5.3.1.6 allows, CRLF not
    counted. Both are C-speed passes over each block, with no object per line: only
    the unfinished line is carried."""

    def __init__(self) -> None:
        self.bare = False
        self.too_long = False
        self._line = b""  # the unfinished line (at most _KEEP bytes of it)
        self._dropped = 0  # bytes of the unfinished line beyond _line

    def feed(self, block: bytes) -> None:
        text = self._line + block
        cut = text.rfind(b"\n") + 1
        done, rest = text[:cut], text[cut:]
        if done:
            # none is bare if, with all but CR and LF deleted, CRLF is left over and
            # over, and no CR is followed by another byte than LF: two C passes
            # (counting CR, LF and CRLF took twice as long, splitting into lines more)
            ends = done.translate(None, _NOT_LINE_ENDS)
            if ends != b"\r\n" * (len(ends) >> 1) or _CR_ALONE.search(done):
                self.bare = True
            elif not self.too_long:
                first = self._dropped + done.find(b"\n") - 1  # the carried line, whole
                self.too_long = first > MAX_LINE or _long_line_in(done)
            self._dropped = 0
        if b"\r" in rest[:-1]:  # a CR not followed by LF (a last CR may still pair)
            self.bare = True
        if len(rest) > _KEEP:
            self._dropped += len(rest) - 1
            rest = rest[-1:]
        self._line = rest

    def close(self) -> None:
        """The data has ended: account for a last line without CRLF (BDAT)."""
        if self._line.endswith(b"\r"):
            self.bare = True
        if self._dropped + len(self._line.rstrip(b"\r")) > MAX_LINE:
            self.too_long = True
        self._line, self._dropped = b"", 0


def _long_line_in(lines: bytes) -> bool:
    """Whether CRLF-ended ``lines`` hold one longer than MAX_LINE. A line starting at
    ``start`` fits if an LF lies within MAX_LINE + 2 bytes; so does every line that
    starts before the last LF there, so the scan jumps past that one: a C search per
    ~1,000 bytes instead of a Python step per line."""
    start = 0
    while start < len(lines):
        end = lines.rfind(b"\n", start, start + MAX_LINE + 2)
        if end < 0:
            return True
        start = end + 1
    return False


def has_bare_line_ending(content: bytes) -> bool:
    """A CR or LF outside a CRLF pair anywhere in ``content``."""
    check = LineCheck()
    check.feed(content)
    check.close()
    return check.bare


@functools.lru_cache(maxsize=1)
def _stamp(second: int) -> str:
    """The RFC 5322 date of this second, made once per second (2% of a message)."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


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
    stamp = format_datetime(now) if now is not None else _stamp(int(time.time()))
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
