"""A durable record of what a node already took, for exactly-once delivery: the
relay's duplicate filter (RFC 1047) and the store's LMTP delivery record both keep
one, so a retransmission after a SIGKILL is answered 250 instead of kept twice.

One append-only file of ``<unix time> <key> <value>`` lines: an append is a single
``write(2)``, in the kernel the moment it returns, so a SIGKILL cannot lose it;
``sync`` makes it survive a power loss too. Bounded in size and age: entries older
than ``ttl`` or beyond the newest ``max_entries`` are forgotten, and the file is
rewritten (temporary name, fsync, rename) once it holds twice what is kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from mxlab.nodes.durable import fsync_dir


class SeenLog:
    """A bounded, durable ``key -> value`` map; keys and values have no whitespace.
    Safe to use from the event loop and a writer thread at once."""

    def __init__(
        self,
        path: Path,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lines = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in raw.decode("utf-8", "replace").splitlines():
            parts = line.split(" ")
            if len(parts) != 3:
                continue  # a line cut short by a crash mid-write
            try:
                when = float(parts[0])
            except ValueError:
                continue
            self._entries[parts[1]] = (when, parts[2])
            self._entries.move_to_end(parts[1])
            self._lines += 1
        self._trim()

    def _trim(self) -> None:
        cutoff = self.clock() - self.ttl
        while self._entries and (
            len(self._entries) > self.max_entries or next(iter(self._entries.values()))[0] < cutoff
        ):
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        """The value recorded for ``key`` within the last ``ttl`` seconds."""
        with self._lock:
            found = self._entries.get(key)
        if found is None or found[0] < self.clock() - self.ttl:
            return None
        return found[1]

    def put_many(self, items: list[tuple[str, str]]) -> None:
        """Record ``items`` with one write; durable against a kill when this returns."""
        if not items:
            return
        now = self.clock()
        line = "".join(f"{now:.3f} {k} {v}\n" for k, v in items).encode()
        with self._lock:
            os.write(self._fd, line)
            for key, value in items:
                self._entries[key] = (now, value)
                self._entries.move_to_end(key)
            self._lines += len(items)
            self._trim()
            if self._lines > 2 * self.max_entries:
                self._compact()

    def put(self, key: str, value: str) -> None:
        self.put_many([(key, value)])

    def sync(self) -> None:
        """fsync: the records survive a power loss as well."""
        os.fsync(self._fd)

    def _compact(self) -> None:
        """Rewrite the file with what is kept (caller holds the lock)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        body = "".join(f"{w:.3f} {k} {v}\n" for k, (w, v) in self._entries.items())
        with open(tmp, "wb") as f:
            f.write(body.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lines = len(self._entries)

    def close(self) -> None:
        os.close(self._fd)
