"""The delivery worker: takes queued messages, sends each recipient on its way,
retries with backoff and bounces what fails for good (RFC 5321 §4.5.4.1)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.mailauth.forward import outbound_sender
from mxlab.nodes.mailauth.mtasts import MtaSts
from mxlab.nodes.message import message_id
from mxlab.nodes.relay.bounce import EXPIRED, build_dsn, status_code, wants_notice, wire_params
from mxlab.nodes.relay.policy import split_address
from mxlab.nodes.relay.queue import (
    Envelope,
    GroupWriter,
    MessageData,
    Queue,
    Recipient,
    Spool,
    apply_action,
    new_queue_id,
)
from mxlab.nodes.relay.routing import RouteError, Router
from mxlab.nodes.relay.sessions import SessionCache
from mxlab.nodes.relay.transport import (
    ClientIdentity,
    Outcome,
    Transfer,
    opportunistic_tls,
)

MAX_ACTIVE = 100  # messages in delivery at once (Postfix's qmgr_message_active_limit, scaled)
MAX_CACHED = 1000  # new small messages kept in memory for their first attempt


def retry_delay(config: RelayNodeConfig, attempts: int) -> float:
    """retry_initial, doubling per attempt, capped at retry_max (Postfix's backoff)."""
    q = config.queue
    return min(q.retry_initial * 2 ** max(attempts - 1, 0), q.retry_max)


class Delivery:
    """Schedules every queued message: one task per delivery attempt, at most
    ``MAX_ACTIVE`` at once and ``concurrency_per_destination`` sessions to one next
    hop at a time. Messages due now wait in a FIFO, deferred ones in a heap by their
    next attempt, so a long queue costs nothing per new message."""

    def __init__(self, config: RelayNodeConfig, queue: Queue) -> None:
        self.config = config
        self.queue = queue
        self.writer = GroupWriter(queue)
        self.router = Router(config)
        tls = opportunistic_tls() if config.tls is not None else None
        self.me = ClientIdentity(config.fqdn, config.address, tls)
        self.sessions = SessionCache()
        self.mta_sts = MtaSts(config, self.router.resolver)  # RFC 8461 policies
        self._envelopes: dict[str, Envelope] = {}
        self._content: dict[str, bytes] = {}  # new small messages, for their first attempt
        self._plain: set[str] = set()  # new messages no line of which begins with a dot
        self._ready: deque[str] = deque()  # due now, oldest first
        self._timers: list[tuple[float, str]] = []  # heap of (next attempt, id)
        self._busy: set[str] = set()
        self._after_attempt: dict[str, str] = {}  # id -> "hold" or "delete", once idle
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._journal_pinned = False  # an attempt ended unsaved: keep the journal
        self._limits: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.queue.concurrency_per_destination)
        )

    def reload(self, new: RelayNodeConfig) -> None:
        """SIGHUP: the next attempt routes by the rewritten config."""
        self.config = self.router.config = new

    def _emit(self, event: str, **fields: object) -> None:
        emit(self.config.node, event, **fields)

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def add(self, env: Envelope, content: bytes | None = None) -> None:
        """Schedule a message that is already safely on disk."""
        self._envelopes[env.id] = env
        if content is not None and len(self._content) < MAX_CACHED:
            self._content[env.id] = content
        self._schedule(env)

    def _schedule(self, env: Envelope) -> None:
        if env.state == "hold":
            return
        if env.next_attempt <= time.time():
            self._ready.append(env.id)
        else:
            heapq.heappush(self._timers, (env.next_attempt, env.id))
        self._wake.set()

    def accept(
        self,
        env: Envelope,
        spool: Spool,
        queued: Callable[[], None],
        *,
        dot_lines: bool = True,
    ) -> asyncio.Task[None]:
        """Make a spooled message durable, call ``queued``, schedule it: in a task of
        its own, so a message whose writer was cancelled (its client hung up during
        the fsync) still gets delivered instead of waiting for the next restart.
        Without ``dot_lines`` its first attempt sends it unstuffed (none is needed)."""
        content = spool.kept()

        async def enqueue() -> None:
            await self.writer.put(env, spool)
            queued()
            self.take(env, content, dot_lines=dot_lines)

        return self._spawn(enqueue())

    def take(self, env: Envelope, content: bytes | None, *, dot_lines: bool = True) -> None:
        """Schedule a new message that is durable now; once only, however often it is
        handed over (the delivery process hears of a message at its start and again
        from the receiver)."""
        if env.id in self._envelopes:
            return
        if not dot_lines and len(self._plain) < MAX_CACHED:
            self._plain.add(env.id)
        self.add(env, content)

    async def resume(self) -> None:
        """Take over the queue left on disk; before any new mail is accepted, so a
        message is never scheduled twice."""
        envelopes, dropped = await asyncio.to_thread(self.queue.load)
        for name in dropped:
            self._emit("queue_dropped", file=name)
        for env in envelopes:
            if env.state == "active":
                env.state = "deferred"  # its attempt died with the previous process
            env.next_attempt = 0.0  # a restart is a queue flush: everything is due now
            self.add(env)
        if envelopes:
            self._emit("queue_resumed", messages=len(envelopes))

    async def run(self) -> None:
        """Deliver whatever falls due, forever."""
        try:
            while True:
                await self._wait(self._start_due())
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.sessions.close()
            await self.writer.close()

    def _start_due(self) -> float | None:
        """Start every due message; return seconds until the next one falls due."""
        self._wake.clear()
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            _, qid = heapq.heappop(self._timers)
            env = self._envelopes.get(qid)
            if env is not None and env.next_attempt <= now:
                self._ready.append(qid)
        while self._ready and len(self._busy) < MAX_ACTIVE:
            env = self._envelopes.get(self._ready.popleft())
            if env is None or env.id in self._busy or env.state == "hold":
                continue  # gone, started by an earlier entry, or held meanwhile
            if env.next_attempt > now:  # rescheduled since it was queued here
                continue
            self._busy.add(env.id)
            self._spawn(self._attempt(env))
        if self._ready:
            return None  # at MAX_ACTIVE: a finishing attempt wakes us
        return max(self._timers[0][0] - now, 0.01) if self._timers else None

    async def _wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, env: Envelope) -> None:
        saved = False
        try:
            await self._deliver(env)
            saved = True
        except Exception as exc:  # a bug must not stop the queue: retry later
            self._emit("error", queue_id=env.id, error=f"{exc.__class__.__name__}: {exc}")
            env.state = "deferred"
            env.next_attempt = time.time() + retry_delay(self.config, env.attempts)
            with contextlib.suppress(OSError, ValueError):
                await asyncio.to_thread(self.queue.save, env)
                saved = True
            self._schedule(env)
        finally:
            self._busy.discard(env.id)
            self._content.pop(env.id, None)
            self._plain.discard(env.id)
            # the journal may go once every attempt has saved what it journaled
            self._journal_pinned |= not saved
            if not self._busy and not self._journal_pinned and self.queue.journal_full:
                self.queue.forget_journal()
            self._wake.set()
        action = self._after_attempt.pop(env.id, None)
        if action is not None and env.id in self._envelopes:
            await self.admin(action, [env.id])

    async def _deliver(self, env: Envelope) -> None:
        kept = self._content.get(env.id)
        content = MessageData(env.size, kept) if kept is not None else self.queue.data(env)
        env.state = "active"
        env.attempts += 1
        reports: list[tuple[Recipient, str, str]] = []

        def delivered(outcomes: dict[str, Outcome]) -> None:
            # Recorded the moment the hop said 250, with no await in between: a
            # SIGKILL now leaves no window in which the message would go out twice.
            self.queue.commit(env.id, list(outcomes))
            reports.extend(self._record(env, list(outcomes.items()), time.time()))

        groups: dict[str, list[Recipient]] = defaultdict(list)
        for rcpt in env.pending():
            groups[self.router.destination(split_address(rcpt.address)[1])].append(rcpt)
        attempts = [
            self._deliver_group(dest, env, rcpts, content, delivered)
            for dest, rcpts in groups.items()
        ]
        # one destination (the usual case) needs no task of its own
        results = [await attempts[0]] if len(attempts) == 1 else await asyncio.gather(*attempts)
        now = time.time()
        reports += self._record(env, [o for group in results for o in group.items()], now)
        warn_after = self.config.queue.delay_warning
        if warn_after is not None and not env.warned and now - env.arrival >= warn_after:
            env.warned = True  # one delay notice per message, as Postfix sends
            reports += [(r, "delayed", status_code(r.reply)) for r in env.pending()]
        await self._notify(env, reports, content)
        if env.pending():
            env.state = "deferred"
            env.next_attempt = min(
                now + retry_delay(self.config, env.attempts),
                env.arrival + self.config.queue.lifetime,
            )
            await asyncio.to_thread(self.queue.save, env)
            self._schedule(env)
        else:
            del self._envelopes[env.id]
            await self.writer.remove(env.id)

    # -- queue administration (mxlab queue: list, flush, hold, release, delete) ------

    def listing(self) -> list[Envelope]:
        """Every queued message as it stands, oldest first."""
        return sorted(self._envelopes.values(), key=lambda e: (e.arrival, e.id))

    async def admin(self, action: str, ids: list[str] | None) -> dict[str, list[str]]:
        """Apply ``action`` to the messages ``ids`` (None: all). A message in delivery
        finishes its attempt first; hold and delete then apply to what is left
        (Postfix's postsuper does the same). Returns the ids done, unchanged (held
        already, not held, due already), later (in delivery) and missing."""
        targets = list(self._envelopes) if ids is None else ids
        result: dict[str, list[str]] = {"done": [], "unchanged": [], "later": [], "missing": []}
        for qid in targets:
            env = self._envelopes.get(qid)
            if env is None:
                if ids is not None:  # with ALL, one delivered meanwhile is no news
                    result["missing"].append(qid)
                continue
            if qid in self._busy:
                if action in ("hold", "delete"):
                    self._after_attempt[qid] = action
                result["later"].append(qid)
                continue
            if not await self._apply(action, env):
                result["unchanged"].append(qid)  # already so: held, released, due
                continue
            result["done"].append(qid)
            self._emit(action, queue_id=qid, message_id=env.message_id, state=env.state)
        return result

    async def _apply(self, action: str, env: Envelope) -> bool:
        if action == "delete":
            del self._envelopes[env.id]
            self._content.pop(env.id, None)
            await self.writer.remove(env.id)
        elif apply_action(env, action):
            await asyncio.to_thread(self.queue.save, env)
            self._schedule(env)
        else:
            return False
        return True

    def _record(
        self, env: Envelope, outcomes: list[tuple[str, Outcome]], now: float
    ) -> list[tuple[Recipient, str, str]]:
        """Apply each recipient's outcome and log it; return what a DSN may report
        as (recipient, action, status): failures, and successes whose DSN requests
        stop here (RFC 3461 §6.2.2: the final MTA says delivered, else relayed)."""
        expired = now - env.arrival >= self.config.queue.lifetime
        by_address = dict(outcomes)
        reports: list[tuple[Recipient, str, str]] = []
        for rcpt in env.pending():
            outcome = by_address.get(rcpt.address)
            if outcome is None:
                continue
            rcpt.reply, rcpt.hop = outcome.reply, outcome.hop
            kind = outcome.kind
            if kind == "deferred" and expired:
                kind = "bounced"
                rcpt.reply += " (delivery time expired)"
                reports.append((rcpt, "failed", EXPIRED))
            elif kind == "bounced":
                reports.append((rcpt, "failed", status_code(outcome.reply)))
            elif kind == "delivered" and not outcome.dsn_passed:
                action = "delivered" if outcome.lmtp else "relayed"
                reports.append((rcpt, action, status_code(outcome.reply)))
            if kind != "deferred":
                rcpt.state = "delivered" if kind == "delivered" else "bounced"
            self._log(kind, env, rcpt, now)
        return reports

    def _log(self, kind: str, env: Envelope, rcpt: Recipient, now: float) -> None:
        self._emit(
            kind,
            queue_id=env.id,
            message_id=env.message_id,
            **{"from": env.sender, "to": rcpt.address},
            hop=rcpt.hop,
            status=rcpt.reply,
            delay=round(now - env.arrival, 3),
            attempt=env.attempts,
        )

    async def _deliver_group(
        self,
        dest: str,
        env: Envelope,
        rcpts: list[Recipient],
        content: MessageData,
        delivered: Callable[[dict[str, Outcome]], None],
    ) -> dict[str, Outcome]:
        addresses = [r.address for r in rcpts]
        async with self._limits[dest]:
            try:
                domain = split_address(addresses[0])[1]
                hops = await self.router.hops(domain)
            except RouteError as exc:
                return dict.fromkeys(addresses, Outcome(exc.reply, dest))
            self._emit(  # what DNS (or the config) chose, for mxlab trace
                "route",
                queue_id=env.id,
                message_id=env.message_id,
                domain=domain,
                mx=self.router.answers.get(domain, []) if dest == f"smtp:{domain}" else [],
                hops=[
                    f"{h.name} {h.address}:{h.port}" + (" (LMTP)" if h.lmtp else "") for h in hops
                ],
            )
            # forwarded mail leaves with an SRS sender (mxlab.nodes.mailauth)
            sender = outbound_sender(
                self.config.mailauth, env, rcpts, local=any(h.lmtp for h in hops)
            )
            transfer = Transfer(
                sender,
                content,
                env.mail_options,
                wire_params(env, rcpts),
                env.id,
                dot_lines=env.id not in self._plain,
            )
            # MTA-STS (RFC 8461 §5): an MX delivery under the domain's policy, if it has one
            mx_domain = domain if dest == f"smtp:{domain}" else None
            return await self.mta_sts.send(
                mx_domain, hops, addresses, transfer, self.me, self.sessions, delivered
            )

    async def _notify(
        self, env: Envelope, reports: list[tuple[Recipient, str, str]], content: MessageData
    ) -> None:
        """Queue an RFC 3464 DSN to the sender with the notices it asked for; never
        one to the null sender, so bounces cannot ping-pong (RFC 5321 §4.5.5)."""
        wanted = [(r, action, code) for r, action, code in reports if wants_notice(r, action)]
        if not env.sender or not wanted:
            return
        original = await asyncio.to_thread(content.read)
        dsn = build_dsn(env, wanted, original, reporting_mta=self.config.fqdn)
        bounce = Envelope(
            id=new_queue_id(),
            sender="",
            recipients=[Recipient(address=env.sender)],
            arrival=time.time(),
            message_id=message_id(dsn),
        )
        actions = sorted({action for _, action, _ in wanted})
        spool = self.queue.spool(bounce.id)
        try:
            spool.write(dsn)
        except OSError:
            spool.discard()
            raise
        await self.accept(
            bounce,
            spool,
            lambda: self._emit(
                "dsn_queued",
                queue_id=bounce.id,
                message_id=bounce.message_id,
                original=env.id,
                to=env.sender,
                actions=actions,
            ),
        )
