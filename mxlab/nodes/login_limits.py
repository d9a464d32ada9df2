"""Failed-login delay and limits for every protocol that takes a password (IMAP,
POP3, SMTP AUTH), the way Dovecot does it: a failure is answered only after a delay
(auth_failure_delay), the delay doubles with each failure of the same source
address across all its connections (Dovecot's auth penalty: reconnecting does not
reset it), and a connection is dropped after a few failures. Sans-IO: it says how
long to wait; the protocol's I/O layer waits."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mxlab.nodes.config import LoginLimits

MAX_SOURCES = 10_000  # addresses remembered; the oldest penalty goes first


class LoginThrottle:
    """The penalties of one node, shared by all its listeners."""

    def __init__(self, limits: LoginLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._penalty: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, last

    def failures(self, source: str) -> int:
        """Failures of ``source`` not yet forgotten."""
        found = self._penalty.get(source)
        if found is None or self.clock() - found[1] > self.limits.penalty_ttl:
            return 0
        return found[0]

    def failed(self, source: str) -> float:
        """Record a failure; the seconds to wait before answering it."""
        count = self.failures(source) + 1
        self._penalty[source] = (count, self.clock())
        self._penalty.move_to_end(source)
        while len(self._penalty) > MAX_SOURCES:
            self._penalty.popitem(last=False)
        return min(self.limits.failure_delay * 2 ** (count - 1), self.limits.max_delay)

    def attempts(self, source: str) -> LoginAttempts:
        return LoginAttempts(self, source)


class LoginAttempts:
    """One connection's failed logins."""

    def __init__(self, throttle: LoginThrottle, source: str) -> None:
        self.throttle = throttle
        self.source = source
        self.failures = 0

    def failed(self) -> float:
        """Record a failure; the seconds to wait before answering it."""
        self.failures += 1
        return self.throttle.failed(self.source)

    @property
    def exhausted(self) -> bool:
        """This connection has used up its failures: answer, then hang up."""
        return self.failures >= self.throttle.limits.max_failures
