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


def strip(data: bytes) -> bytes:
    """The message without quarantine marks forged by whoever sent it."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not _MARK.search(head):
        return data
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and dropping:
            continue
        dropping = _MARK.match(line) is not None
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body
