"""The relay's delivery process (``queue.delivery_process``), as Postfix runs its qmgr
and smtp processes beside smtpd: the receiving process queues each message durably,
answers 250 and hands the queue id over a pipe; this process schedules and delivers
everything in the queue. A relay then keeps two cores busy instead of one.

Exactly once holds as in one process, because the queue files are the only truth:
the receiver records the queue in its duplicate filter before this process starts,
hands over only what is fsynced, and accepts nothing before this process has taken
the whole queue over; a message heard of twice is scheduled once. The two live and
die together: this process dies with its parent (PR_SET_PDEATHSIG, or the end of its
input), the receiver ends when this process does, and the delivery lock keeps a
second delivery process off the queue until the first is gone.

    python -m mxlab.nodes.relay.qmgr PARENT_PID REPLY_FD   (the config on stdin's first line)

stdin, from the receiver: ``<queue id> <dot_lines 0|1>`` per message, ``config <json>``
for a config put in force by SIGHUP. REPLY_FD, back to it: ``1`` once the queue is
taken over, ``R`` once each config is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable

import uvloop

from mxlab.nodes.config import RelayNodeConfig, dump_json, parse_json
from mxlab.nodes.events import emit
from mxlab.nodes.host_signals import handle
from mxlab.nodes.relay.delivery import Delivery
from mxlab.nodes.relay.queue import Envelope, GroupWriter, Queue, Spool, read_new
from mxlab.nodes.relay.queue_admin import SIGNAL, take_over

STOP_TIMEOUT = 10.0  # seconds the delivery process has to end its attempts at a stop
RETRY = 1.0  # seconds before a message that could not be read is read again
PR_SET_PDEATHSIG = 1  # prctl(2)
READY, RELOADED = ord("1"), ord("R")
CONFIG = b"config "


class _Replies(asyncio.Protocol):
    """The receiver's end of REPLY_FD."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ready: asyncio.Future[bool] = loop.create_future()  # False: it ended first
        self.reloads: deque[asyncio.Future[None]] = deque()

    def data_received(self, data: bytes) -> None:
        for byte in data:
            if byte == READY and not self.ready.done():
                self.ready.set_result(True)
            elif byte == RELOADED and self.reloads:
                self.reloads.popleft().set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)


class DeliveryProcess:
    """The receiver's side: starts the delivery process, makes accepted messages
    durable and hands them over; ``run`` ends the node when the delivery process ends."""

    def __init__(self, config: RelayNodeConfig, queue: Queue) -> None:
        self.config = config
        self.queue = queue
        self.writer = GroupWriter(queue)
        self._proc: asyncio.subprocess.Process | None = None
        self._replies: _Replies | None = None
        self._ready = False
        self._signals: list[signal.Signals] = []  # arrived before the process was ready
        self._tasks: set[asyncio.Task[None]] = set()

    async def resume(self) -> None:
        """Start the delivery process and wait until it has taken over the queue."""
        loop = asyncio.get_running_loop()
        handle(SIGNAL, self.forward, SIGNAL)  # mxlab queue
        # Before anything is delivered: a kill may have come between a message and its
        # duplicate-filter records, and its client, never answered, will send it again.
        await asyncio.to_thread(self.queue.recall)
        self._replies = replies = _Replies(loop)
        back, back_w = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                str(os.getpid()),
                str(back_w),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(back_w,),
            )
        except BaseException:
            os.close(back)
            raise
        finally:
            os.close(back_w)
        await loop.connect_read_pipe(lambda: replies, os.fdopen(back, "rb", buffering=0))
        self._send(dump_json(self.config))
        if not await replies.ready:
            raise SystemExit(f"{self.config.node}: the delivery process did not start")
        self._ready = True
        for sig in self._signals:
            self.forward(sig)

    def _send(self, line: str) -> bool:
        pipe = self._proc.stdin if self._proc is not None else None
        if pipe is None or pipe.is_closing():
            return False
        pipe.write(line.encode() + b"\n")
        return True

    def forward(self, sig: signal.Signals) -> None:
        if self._ready and self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(sig)
        else:
            self._signals.append(sig)

    def reload(self, new: RelayNodeConfig) -> asyncio.Future[None] | None:
        """Hand the delivery process the new config; done once it is in force there."""
        self.config = new
        if self._replies is None or not self._send(CONFIG.decode() + dump_json(new)):
            return None
        done = asyncio.get_running_loop().create_future()
        self._replies.reloads.append(done)
        return done

    def accept(
        self, env: Envelope, spool: Spool, queued: Callable[[], None], *, dot_lines: bool = True
    ) -> asyncio.Task[None]:
        """As ``Delivery.accept``: durable, then ``queued``, then handed over (or, if
        the delivery process is gone, found in the queue at the next start)."""

        async def enqueue() -> None:
            await self.writer.put(env, spool)
            queued()
            self._send(f"{env.id} {int(dot_lines)}")

        task = asyncio.create_task(enqueue())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        """Until the node stops; then let the delivery process finish its attempts."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            code = await self._proc.wait()
        finally:
            await self.writer.close()
            self._proc.stdin.close()  # its end of input: the delivery process stops
            try:
                await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        raise SystemExit(f"{self.config.node}: the delivery process ended (exit code {code})")


class _Handoffs(asyncio.Protocol):
    """The delivery process's stdin (the receiver's lines, above)."""

    def __init__(
        self, queue: Queue, delivery: Delivery, reply: int, ended: asyncio.Future[None]
    ) -> None:
        self.queue = queue
        self.delivery = delivery
        self.reply = reply
        self.ended = ended
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.startswith(CONFIG):
                self.delivery.reload(parse_json(RelayNodeConfig, line[len(CONFIG) :]))
                os.write(self.reply, bytes([RELOADED]))
            else:
                qid, dot_lines = line.decode().split(" ")
                self.take(qid, dot_lines == "1")

    def take(self, qid: str, dot_lines: bool) -> None:
        """Schedule a message the receiver queued; one that cannot be read now (out of
        file descriptors, say) is read again shortly: it has its 250 already."""
        try:
            env, content = read_new(self.queue.root, qid)
        except (OSError, ValueError) as exc:
            emit(self.delivery.config.node, "error", queue_id=qid, error=str(exc))
            if not isinstance(exc, FileNotFoundError):
                asyncio.get_running_loop().call_later(RETRY, self.take, qid, dot_lines)
            return
        self.delivery.take(env, content, dot_lines=dot_lines)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():  # the receiver closed it, or died
            self.ended.set_result(None)


async def _deliver(config: RelayNodeConfig, reply: int, first: bytes) -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not ended.done():
            ended.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    queue = Queue(config.state_path / "queue")
    delivery = Delivery(config, queue)
    lock = await take_over(delivery)  # once an earlier delivery process is gone
    handoffs = _Handoffs(queue, delivery, reply, ended)
    await loop.connect_read_pipe(lambda: handoffs, os.fdopen(0, "rb", buffering=0))
    handoffs.data_received(first)
    os.write(reply, bytes([READY]))
    worker = asyncio.create_task(delivery.run())
    try:
        await asyncio.wait([worker, ended], return_when=asyncio.FIRST_COMPLETED)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        queue.close()
        os.close(lock)
    if not worker.cancelled() and worker.exception() is not None:
        raise worker.exception()  # type: ignore[misc]  # a bug: the node ends, and says so


def _first_line(fd: int) -> tuple[bytes, bytes]:
    """The config line, read unbuffered: what follows it is handed to the pipe reader."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise SystemExit("qmgr: no config on stdin")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


def main(argv: list[str]) -> int:
    # a queue request (until the control channel answers it) or a reload (the config
    # comes on stdin) sent to the node's whole process group must not end this one
    signal.signal(SIGNAL, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parent, reply = int(argv[0]), int(argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the prctl
        return 1
    line, rest = _first_line(0)
    config = parse_json(RelayNodeConfig, line)
    os.umask(0o077)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_deliver(config, reply, rest))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
