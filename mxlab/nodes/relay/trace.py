"""Trace fields and header checks on the raw message bytes (never re-encoded)."""

from __future__ import annotations

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


class LineCheck:
    """Line rules over a message that arrives in blocks split anywhere: a CR or LF
    outside a CRLF pair (the raw material of SMTP smuggling, which RFC 5321 §2.3.8
    forbids in the mail data) and the longest line (§4.5.3.1.6), CRLF not counted.
    Both are C-speed passes over each block; only the unfinished line is carried."""

    def __init__(self) -> None:
        self.bare = False
        self.longest = 0
        self._line = b""  # the unfinished line (at most _KEEP bytes of it)
        self._dropped = 0  # bytes of the unfinished line beyond _line

    def feed(self, block: bytes) -> None:
        text = self._line + block
        cut = text.rfind(b"\n") + 1
        done, rest = text[:cut], text[cut:]
        if done:
            # splitlines breaks at CRLF and at a bare CR or LF alike: a CRLF makes one
            # line of two ending bytes, a bare one a line of one, so the ending bytes
            # number twice the lines only when none is bare: two C passes (replacing
            # every CRLF to look for what is left cost a third of a 1 MB message's CPU)
            lines = done.splitlines()
            if len(done) - len(done.translate(None, b"\r\n")) != 2 * len(lines):
                self.bare = True
            else:
                first = self._dropped + len(lines[0])
                self.longest = max(self.longest, first, max(map(len, lines)))
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
        self.longest = max(self.longest, self._dropped + len(self._line.rstrip(b"\r")))
        self._line, self._dropped = b"", 0


def has_bare_line_ending(content: bytes) -> bool:
    """A CR or LF outside a CRLF pair anywhere in ``content``."""
    check = LineCheck()
    check.feed(content)
    check.close()
    return check.bare


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
