"""Idle SMTP and LMTP sessions kept for the next message to the same host, as
Postfix's connection cache does (smtp_connection_cache_time_limit, 2 s): connect,
greeting, EHLO and STARTTLS are paid once per burst instead of once per message."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from mxlab.nodes.relay.client import Client

IDLE = 2.0  # seconds an unused session stays open

Key = tuple[str, int]  # address, port


class SessionCache:
    def __init__(self, idle: float = IDLE) -> None:
        self.idle = idle
        self._idle: dict[Key, list[tuple[Client, asyncio.TimerHandle]]] = defaultdict(list)
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: Key) -> Client | None:
        """An idle session to ``key`` still connected, or None. No RSET probe: each
        transaction ended cleanly, and one the server dropped meanwhile fails at
        MAIL, before any message is at stake (the caller then opens a new one)."""
        while self._idle[key]:
            smtp, timer = self._idle[key].pop()
            timer.cancel()
            if smtp.is_connected:
                return smtp
            smtp.close()
        return None

    def give(self, key: Key, smtp: Client) -> None:
        """Keep a session whose last transaction is complete."""
        timer = asyncio.get_running_loop().call_later(self.idle, self._expire, key, smtp)
        self._idle[key].append((smtp, timer))

    def _expire(self, key: Key, smtp: Client) -> None:
        self._idle[key] = [(s, t) for s, t in self._idle[key] if s is not smtp]
        task = asyncio.create_task(smtp.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def close(self) -> None:
        """Drop every idle session (at shutdown: no time for QUIT)."""
        for entries in self._idle.values():
            for smtp, timer in entries:
                timer.cancel()
                smtp.close()
        self._idle.clear()
