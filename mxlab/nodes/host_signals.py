"""The signals the host sends a running node: SIGHUP (reread the config; the DNS node's
faults) and SIGUSR1 (a relay's ``mxlab queue`` request waits). Their default action ends
the process, and the host may send one the moment the node's process exists: the
dashboard asks every running relay's queue each second, ``mxlab dns add`` reloads the
DNS node. So they are blocked (signal(7): held pending, not lost) from the node's start
until its handler is on the event loop; one sent in between is handled then, instead of
ending a node that is still starting."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

HOST_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1})


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Block the host's signals in this thread, and in what it starts (the mask passes
    through fork and exec); the mask as it was afterwards."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HOST_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def handle(sig: signal.Signals, callback: Callable[..., object], *args: Any) -> None:
    """``add_signal_handler``, then let ``sig`` through: one that came while it was
    held is handled now."""
    asyncio.get_running_loop().add_signal_handler(sig, callback, *args)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
