"""The raw message bytes as every node reads them (never re-encoded): its header
section and its Message-ID, which the relay's and the store's logs carry so that
`mxlab trace` can follow one message from node to node."""

from __future__ import annotations

import re

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M)


def header_block(content: bytes) -> bytes:
    """The header section: everything before the first empty line (RFC 5322 §2.1)."""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def message_id(content: bytes) -> str:
    """The Message-ID field, unfolded, or "" when the message has none."""
    m = _MESSAGE_ID.search(header_block(content))
    if m is None:
        return ""
    return b" ".join(m.group(1).split()).decode("ascii", "replace")
