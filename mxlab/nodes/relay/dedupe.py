"""Suppress retransmissions of a message this relay already queued (RFC 1047).

An upstream relay killed after our 250 left its socket but before it recorded the
delivery sends the same queued message again on restart. Its bytes are identical,
down to the upstream ``Received:`` line with its queue id, so a digest of sender
and content recognises it; a new message never has the same bytes. Recipients
already taken are answered 250 and not queued twice. In memory: it covers the
upstream's crash, not ours.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_ENTRIES = 10_000


@dataclass
class _Seen:
    when: float
    rcpts: dict[str, str] = field(default_factory=dict)  # recipient -> its queue id


class DuplicateFilter:
    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()

    @staticmethod
    def key(sender: str, content: bytes) -> bytes:
        return hashlib.sha256(sender.encode("utf-8", "surrogateescape") + b"\0" + content).digest()

    def check(self, key: bytes, rcpts: list[str]) -> tuple[str | None, list[str]]:
        """A queue id this content already has for one of ``rcpts`` (or None), and
        the recipients not yet queued with it."""
        seen = self._seen.get(key)
        if seen is None or time.monotonic() - seen.when > self.ttl:
            return None, rcpts
        known = [seen.rcpts[r.lower()] for r in rcpts if r.lower() in seen.rcpts]
        return (known[0] if known else None), [r for r in rcpts if r.lower() not in seen.rcpts]

    def remember(self, key: bytes, queue_id: str, rcpts: list[str]) -> None:
        seen = self._seen.get(key)
        if seen is None or time.monotonic() - seen.when > self.ttl:
            seen = self._seen[key] = _Seen(time.monotonic())
        seen.rcpts.update((r.lower(), queue_id) for r in rcpts)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
