"""The delivery worker: takes queued messages, sends each recipient on its way,
retries with backoff and bounces what fails for good (RFC 5321 §4.5.4.1)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.relay.bounce import EXPIRED, build_dsn, status_code, wants_failure_notice
from mxlab.nodes.relay.policy import split_address
from mxlab.nodes.relay.queue import Envelope, Queue, Recipient, new_queue_id
from mxlab.nodes.relay.routing import RouteError, Router
from mxlab.nodes.relay.trace import message_id
from mxlab.nodes.relay.transport import Outcome, send

MAX_ACTIVE = 100  # messages in delivery at once (Postfix's qmgr_message_active_limit, scaled)


def retry_delay(config: RelayNodeConfig, attempts: int) -> float:
    """retry_initial, doubling per attempt, capped at retry_max (Postfix's backoff)."""
    q = config.queue
    return min(q.retry_initial * 2 ** max(attempts - 1, 0), q.retry_max)


class Delivery:
    def __init__(self, config: RelayNodeConfig, queue: Queue) -> None:
        self.config = config
        self.queue = queue
        self.router = Router(config)
        self._envelopes: dict[str, Envelope] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._limits: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.queue.concurrency_per_destination)
        )

    def _emit(self, event: str, **fields: object) -> None:
        emit(self.config.node, event, **fields)

    def add(self, env: Envelope) -> None:
        """Schedule a message that is already safely on disk."""
        self._envelopes[env.id] = env
        self._wake.set()

    async def run(self) -> None:
        """Resume the queue left on disk, then deliver whatever falls due, forever."""
        envelopes, dropped = await asyncio.to_thread(self.queue.load)
        for name in dropped:
            self._emit("queue_dropped", file=name)
        for env in envelopes:
            if env.state == "active":  # interrupted mid-delivery: due again now
                env.next_attempt = 0.0
            self.add(env)
        if envelopes:
            self._emit("queue_resumed", messages=len(envelopes))
        try:
            while True:
                await self._wait(self._start_due())
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_due(self) -> float | None:
        """Start every due message; return seconds until the next one falls due."""
        now = time.time()
        soonest: float | None = None
        for env in list(self._envelopes.values()):
            if env.id in self._busy or env.state == "hold":
                continue
            if env.next_attempt <= now and len(self._busy) < MAX_ACTIVE:
                self._busy.add(env.id)
                task = asyncio.create_task(self._attempt(env))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                wait = max(env.next_attempt - now, 0.05)
                soonest = wait if soonest is None else min(soonest, wait)
        self._wake.clear()
        return soonest

    async def _wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, env: Envelope) -> None:
        try:
            await self._deliver(env)
        except Exception as exc:  # a bug must not stop the queue: retry later
            self._emit("error", id=env.id, error=f"{exc.__class__.__name__}: {exc}")
            env.next_attempt = time.time() + retry_delay(self.config, env.attempts)
        finally:
            self._busy.discard(env.id)
            self._wake.set()

    async def _deliver(self, env: Envelope) -> None:
        content = await asyncio.to_thread(self.queue.read, env.id)
        env.state = "active"
        env.attempts += 1
        groups: dict[str, list[Recipient]] = defaultdict(list)
        for rcpt in env.pending():
            groups[self.router.destination(split_address(rcpt.address)[1])].append(rcpt)
        results = await asyncio.gather(
            *(self._deliver_group(dest, env, rcpts, content) for dest, rcpts in groups.items())
        )
        now = time.time()
        expired = now - env.arrival >= self.config.queue.lifetime
        failed: list[tuple[Recipient, str]] = []
        for outcomes in results:
            for rcpt in env.pending():
                if rcpt.address not in outcomes:
                    continue
                outcome = outcomes[rcpt.address]
                rcpt.reply, rcpt.hop = outcome.reply, outcome.hop
                kind = outcome.kind
                if kind == "deferred" and expired:
                    kind = "bounced"
                    rcpt.reply += " (delivery time expired)"
                    failed.append((rcpt, EXPIRED))
                elif kind == "bounced":
                    failed.append((rcpt, status_code(outcome.reply)))
                if kind != "deferred":
                    rcpt.state = "delivered" if kind == "delivered" else "bounced"
                self._log(kind, env, rcpt, now)
        if failed:
            await self._bounce(env, failed, content)
        if env.pending():
            env.state = "deferred"
            env.next_attempt = min(
                now + retry_delay(self.config, env.attempts),
                env.arrival + self.config.queue.lifetime,
            )
            await asyncio.to_thread(self.queue.save, env)
        else:
            await asyncio.to_thread(self.queue.remove, env.id)
            del self._envelopes[env.id]

    def _log(self, kind: str, env: Envelope, rcpt: Recipient, now: float) -> None:
        self._emit(
            kind,
            id=env.id,
            message_id=env.message_id,
            **{"from": env.sender, "to": rcpt.address},
            hop=rcpt.hop,
            status=rcpt.reply,
            delay=round(now - env.arrival, 3),
            attempt=env.attempts,
        )

    async def _deliver_group(
        self, dest: str, env: Envelope, rcpts: list[Recipient], content: bytes
    ) -> dict[str, Outcome]:
        addresses = [r.address for r in rcpts]
        async with self._limits[dest]:
            try:
                hops = await self.router.hops(split_address(addresses[0])[1])
            except RouteError as exc:
                return dict.fromkeys(addresses, Outcome(exc.reply, dest))
            return await send(
                hops,
                env.sender,
                addresses,
                content,
                helo=self.config.fqdn,
                mail_options=env.mail_options,
                starttls=self.config.tls is not None,
            )

    async def _bounce(
        self, env: Envelope, failed: list[tuple[Recipient, str]], content: bytes
    ) -> None:
        """Queue an RFC 3464 DSN to the sender; never one to the null sender, so
        bounces cannot ping-pong (RFC 5321 §4.5.5)."""
        notify = [(r, code) for r, code in failed if wants_failure_notice(r)]
        if not env.sender or not notify:
            return
        dsn = build_dsn(env, notify, content, reporting_mta=self.config.fqdn)
        bounce = Envelope(
            id=new_queue_id(),
            sender="",
            recipients=[Recipient(address=env.sender)],
            arrival=time.time(),
            message_id=message_id(dsn),
        )
        await asyncio.to_thread(self.queue.put, bounce, dsn)
        self._emit("bounce_queued", id=bounce.id, original=env.id, to=env.sender)
        self.add(bounce)
