"""The relay's delivery process (``queue.delivery_process``), as Postfix runs its qmgr
and smtp processes beside smtpd: the receiving process queues each message durably,
answers 250 and hands the queue id over a pipe; this process schedules and delivers
everything in the queue. A relay then keeps two cores busy instead of one.

Exactly once holds as in one process, because the queue files are the only truth:
the receiver hands over only what is fsynced, the delivery process takes over the
whole queue before the receiver accepts anything, and a message heard of twice is
scheduled once. The two live and die together: the delivery process dies with its
parent (PR_SET_PDEATHSIG), the receiver ends when it does, and a lock on the state
directory keeps a second delivery process off the queue until the first is gone.

    python -m mxlab.nodes.relay.qmgr PARENT_PID READY_FD   (the config on stdin's first line)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import Callable

import uvloop

from mxlab.nodes.config import RelayNodeConfig, dump_json, parse_json
from mxlab.nodes.events import emit
from mxlab.nodes.relay.delivery import Delivery
from mxlab.nodes.relay.queue import Envelope, GroupWriter, Queue, Spool, read_new
from mxlab.nodes.relay.queue_admin import SIGNAL, ControlChannel
from mxlab.nodes.reload import on_sighup

LOCK_FILE = "delivery.lock"
STOP_TIMEOUT = 10.0  # seconds the delivery process has to end its attempts at a stop
PR_SET_PDEATHSIG = 1  # prctl(2)


class DeliveryProcess:
    """The receiver's side: starts the delivery process, makes accepted messages
    durable and hands them over; ``run`` ends the node when the delivery process ends."""

    def __init__(self, config: RelayNodeConfig, queue: Queue) -> None:
        self.config = config
        self.queue = queue
        self.writer = GroupWriter(queue)
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = False
        self._signals: list[signal.Signals] = []  # arrived before the process was ready
        self._tasks: set[asyncio.Task[None]] = set()

    async def resume(self) -> None:
        """Start the delivery process and wait until it has taken over the queue."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(SIGNAL, self.forward, SIGNAL)  # mxlab queue
        ready, ready_w = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                str(os.getpid()),
                str(ready_w),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(ready_w,),
            )
            os.close(ready_w)
            assert self._proc.stdin is not None
            self._proc.stdin.write(dump_json(self.config).encode() + b"\n")
            started = await loop.run_in_executor(None, os.read, ready, 1)
        finally:
            os.close(ready)
        if not started:
            raise SystemExit(f"{self.config.node}: the delivery process did not start")
        self._ready = True
        for sig in self._signals:
            self.forward(sig)
        # the duplicate filter's records of queued mail, should a kill have cut them off
        await asyncio.to_thread(self.queue.recall)

    def forward(self, sig: signal.Signals) -> None:
        if self._ready and self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(sig)
        else:
            self._signals.append(sig)

    def reload(self, new: RelayNodeConfig) -> None:
        """The delivery process rereads the config file itself."""
        self.config = new
        self.forward(signal.SIGHUP)

    def accept(
        self, env: Envelope, spool: Spool, queued: Callable[[], None], *, dot_lines: bool = True
    ) -> asyncio.Task[None]:
        """As ``Delivery.accept``: durable, then ``queued``, then handed over."""

        async def enqueue() -> None:
            await self.writer.put(env, spool)
            queued()
            pipe = self._proc.stdin if self._proc is not None else None
            if pipe is not None and not pipe.is_closing():  # else: found at the next start
                pipe.write(f"{env.id} {int(dot_lines)}\n".encode())

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
    """The delivery process's stdin: one ``<queue id> <dot_lines>`` line per message."""

    def __init__(self, queue: Queue, delivery: Delivery, ended: asyncio.Future[None]) -> None:
        self.queue = queue
        self.delivery = delivery
        self.ended = ended
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            qid, dot_lines = line.decode().split(" ")
            try:
                env, content = read_new(self.queue.root, qid)
            except (OSError, ValueError) as exc:  # still on disk: the next start finds it
                emit(self.delivery.config.node, "error", queue_id=qid, error=str(exc))
                continue
            self.delivery.take(env, content, dot_lines=dot_lines == "1")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():  # the receiver closed it, or died
            self.ended.set_result(None)


async def _deliver(config: RelayNodeConfig, ready: int, first: bytes) -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not ended.done():
            ended.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    lock = os.open(config.state_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)  # an earlier one is gone
    queue = Queue(config.state_path / "queue")
    delivery = Delivery(config, queue)
    on_sighup(config, delivery.reload)
    await delivery.resume()
    ControlChannel(config.state_path, delivery).install()
    handoffs = _Handoffs(queue, delivery, ended)
    await loop.connect_read_pipe(lambda: handoffs, os.fdopen(0, "rb", buffering=0))
    handoffs.data_received(first)
    os.write(ready, b"1")
    os.close(ready)
    worker = asyncio.create_task(delivery.run())
    try:
        await asyncio.wait([worker, ended], return_when=asyncio.FIRST_COMPLETED)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        queue.close()
        os.close(lock)


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
    parent, ready = int(argv[0]), int(argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the prctl
        return 1
    line, rest = _first_line(0)
    config = parse_json(RelayNodeConfig, line)
    os.umask(0o077)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_deliver(config, ready, rest))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
