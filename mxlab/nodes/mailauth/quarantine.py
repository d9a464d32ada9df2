"""The mark a relay puts on a message its DMARC check quarantines (RFC 7489 §6.3
p=quarantine), and the store reads to file it in the user's Junk folder (RFC 6154 \\Junk).
The relay removes any such header arriving from outside, so only its own mark counts."""

from __future__ import annotations

import re

HEADER = b"X-Mxlab-Quarantine"
_MARK = re.compile(rb"^x-mxlab-quarantine:", re.I | re.M)


def quarantined(data: bytes) -> bool:
    """Whether the header section carries the relay's quarantine mark."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return _MARK.search(head) is not None


def mark(reason: str) -> bytes:
    return HEADER + b": " + reason.encode("ascii", "replace") + b"\r\n"


def strip(data: bytes, authserv_id: str) -> bytes:
    """The message without headers forged by whoever sent it: quarantine marks, and
    Authentication-Results claiming to be ours (RFC 8601 §5: a border MTA deletes them)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    ours = re.compile(
        rb"^authentication-results:\s*" + re.escape(authserv_id.encode()) + rb"\s*(;|$)", re.I
    )
    if not _MARK.search(head) and not ours.search(head.replace(b"\r\n", b" ")):
        return data
    kept: list[bytes] = []
    field: list[bytes] = []
    for line in [*head.split(b"\r\n"), b""]:
        if line[:1] in (b" ", b"\t"):
            field.append(line)
            continue
        unfolded = b" ".join(field)
        if field and not _MARK.match(unfolded) and not ours.match(unfolded):
            kept += field
        field = [line]
    return b"\r\n".join(kept) + sep + body
