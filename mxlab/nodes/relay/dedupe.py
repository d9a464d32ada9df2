"""Suppress retransmissions of a message this relay already queued (RFC 1047).

An upstream relay killed after our 250 left its socket but before it recorded the
delivery sends the same queued message again on restart. Its bytes are identical,
down to the upstream ``Received:`` line with its queue id, so a digest of sender
and content recognises it; a new message never has the same bytes. Recipients
already taken are answered 250 and not queued twice.

Durable (``mxlab.nodes.seen``): the queue writes a message's records right after the
message itself, before its 250 (written, not fsynced: a kill cannot undo a write); a
message queued whose records a kill cut off carries its digest in its envelope, and
``resume`` puts the records back. So this relay's own crash cannot make it take a
message twice either.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from mxlab.nodes.seen import SeenLog

MAX_ENTRIES = 100_000  # recipient copies remembered


class DuplicateFilter:
    def __init__(self, path: Path, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.log = SeenLog(path, ttl, max_entries)
        # digests of messages being queued now, done once each is queued or dropped: a
        # copy of one arriving meanwhile waits (its records are not written yet)
        self.in_flight: dict[str, asyncio.Future[None]] = {}

    @staticmethod
    def hasher(sender: str) -> hashlib._Hash:
        """The message's digest so far: fed the content as it arrives, its hex digest
        is the key kept in the queue envelope."""
        return hashlib.sha256(sender.encode("utf-8", "surrogateescape") + b"\0")

    @classmethod
    def key(cls, sender: str, content: bytes) -> str:
        """The digest of a message received whole."""
        digest = cls.hasher(sender)
        digest.update(content)
        return digest.hexdigest()

    @staticmethod
    def _entry(key: str, rcpt: str) -> str:
        raw = f"{key}\0{rcpt.lower()}".encode("utf-8", "surrogateescape")
        return hashlib.sha256(raw).hexdigest()[:40]

    def check(self, key: str, rcpts: list[str]) -> tuple[str | None, list[str]]:
        """A queue id this content already has for one of ``rcpts`` (or None), and
        the recipients not yet queued with it."""
        known = [(r, self.log.get(self._entry(key, r))) for r in rcpts]
        ids = [qid for _, qid in known if qid is not None]
        return (ids[0] if ids else None), [r for r, qid in known if qid is None]

    def remember(self, key: str, queue_id: str, rcpts: list[str]) -> None:
        """Record (not yet fsynced: ``sync``) that ``rcpts`` are queued as ``queue_id``."""
        self.log.put_many([(self._entry(key, r), queue_id) for r in rcpts])

    def sync(self) -> None:
        self.log.sync()

    def close(self) -> None:
        self.log.close()
