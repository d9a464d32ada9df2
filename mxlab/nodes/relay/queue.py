"""The on-disk mail queue. "250 queued" means the message is fsynced under its final
name: streamed to a temporary name while it is received (``Spool``), its envelope
appended, renamed, fsynced, and the directory fsynced where the file's fsync does not
make the name durable too (every file system but ext4), one directory fsync shared by
every message of a batch. A killed relay resumes every message it finds.

Layout under ``<state_dir>/queue/``: ``<id>.msg`` (the bytes as received, trace
header first, then a LF and the envelope as one JSON line: last, because it is
only known once the data has ended), ``<id>.env`` (the envelope as it is now, once
delivery has changed it: per-recipient state, next retry, hold) and
``delivered.journal`` (deliveries not yet written into their envelopes).

Queue states (Postfix's): incoming (queued, first attempt not begun), active (in
delivery), deferred (waiting for a retry), hold (kept until released).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from mxlab.nodes.config import dump_json, parse_json
from mxlab.nodes.durable import fsync_dir, new_names_need_dir_fsync
from mxlab.nodes.relay.dedupe import DuplicateFilter

LOCK_FILE = "delivery.lock"
LOCK_WAIT = 5.0  # seconds an earlier holder of the delivery lock gets to end
BLOCK = 1 << 18  # bytes read from a spool file at a time when sending
KEEP = 1 << 16  # a new message up to this size stays in memory for its first attempt
SYNCERS = 8  # threads fsyncing the files of one batch at once
JOURNAL_SLACK = 1 << 13  # bytes of delivery journal left until an idle moment empties it
QueueState = Literal["incoming", "active", "deferred", "hold"]
RcptState = Literal["pending", "delivered", "bounced"]


# Plain dataclasses, read back with the node config's checking loader: pydantic cost
# a relay 4-5 MiB and 40 ms at start-up. The JSON is pydantic's, field for field, so
# queues written before read the same.
@dataclass(kw_only=True)
class Recipient:
    address: str
    state: RcptState = "pending"
    reply: str = ""  # the last reply or diagnostic, for logs and DSNs
    hop: str = ""  # the host that gave it
    notify: list[str] = field(default_factory=list)  # RFC 3461 §4.1 NOTIFY values, empty = default
    orcpt: str = ""  # RFC 3461 §4.2 ORCPT, kept for the DSN


@dataclass(kw_only=True)
class Envelope:
    id: str
    sender: str  # "" is the null reverse-path of bounces
    recipients: list[Recipient]
    arrival: float
    size: int = 0  # bytes of the message as queued
    message_id: str = ""
    # BODY=8BITMIME, SMTPUTF8: forwarded to the next hop
    mail_options: list[str] = field(default_factory=list)
    ret: str = ""  # RFC 3461 §4.3 RET=FULL|HDRS
    envid: str = ""  # RFC 3461 §4.4 ENVID
    state: QueueState = "incoming"
    attempts: int = 0
    warned: bool = False  # a delay notice went out (QueuePolicy.delay_warning)
    next_attempt: float = 0.0
    digest: str = ""  # sender and content as received: the duplicate filter's key

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]


def new_queue_id() -> str:
    """Postfix-style: time-ordered hex, then randomness so ids never collide (the
    random module reseeds from the OS in a forked child; an id needs no secrecy, and
    secrets' system call per id was 1% of a small message)."""
    return f"{time.time_ns() // 1000:X}{random.getrandbits(24):06X}"


async def own_queue(state: Path, node: str) -> int:
    """Take the relay's delivery lock (``state/delivery.lock``) and return its file
    descriptor, held until closed or the process ends: one process delivers from a
    queue. An earlier holder gets ``LOCK_WAIT`` seconds to end (the delivery process
    of a relay just killed is dying), then the node ends with one line."""
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise SystemExit(
                    f"{node}: another process delivers from {state / 'queue'} (it holds "
                    f"{state / LOCK_FILE}): stop that relay first"
                ) from None
            await asyncio.sleep(0.02)


def _write_synced(path: Path, *parts: bytes) -> None:
    """Temporary name, fsync, rename: the file is whole or absent after a crash."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _envelope_line(envelope: Envelope) -> bytes:
    return b"\n" + dump_json(envelope).encode() + b"\n"


def read_envelope(root: Path, qid: str) -> Envelope:
    """The envelope as it is now: ``<id>.env`` once written, else the message's own
    last line. Raises OSError when the message is gone, ValueError when unreadable."""
    try:
        return parse_json(Envelope, (root / f"{qid}.env").read_bytes())
    except FileNotFoundError:
        pass
    with open(root / f"{qid}.msg", "rb") as f:
        return _trailer(f)


def read_new(root: Path, qid: str) -> tuple[Envelope, bytes | None]:
    """A message just queued by another process (no ``.env`` yet): its envelope, and
    its bytes when small enough to keep in memory for the first attempt."""
    with open(f"{root}/{qid}.msg", "rb") as f:
        envelope = _trailer(f)
        if envelope.size > KEEP:
            return envelope, None
        f.seek(0)
        return envelope, f.read(envelope.size)


def _trailer(f: BinaryIO) -> Envelope:
    """The envelope line at the end of a message file: JSON has no raw LF, so the
    line starts after the last LF but the final one; its size says where the
    message ends, which must be just before it."""
    end = f.seek(0, os.SEEK_END)
    want = 4096
    while True:
        start = max(end - want, 0)
        f.seek(start)
        tail = f.read(end - start)
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0 or start == 0:
            break
        want *= 4
    if cut < 0 or not tail.endswith(b"\n"):
        raise ValueError("no envelope line at the end of the message file")
    envelope = parse_json(Envelope, tail[cut + 1 :])
    if envelope.size != start + cut:
        raise ValueError("the message file does not match its envelope's size")
    return envelope


@dataclass(frozen=True)
class MessageData:
    """A queued message's bytes: in memory (a new small message, a DSN) or read in
    blocks from its queue file, so a large message never sits in memory whole."""

    size: int
    content: bytes | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return self.size

    def blocks(self) -> Iterator[bytes]:
        if self.content is not None:
            yield self.content
            return
        assert self.path is not None  # one of the two is always set
        with open(self.path, "rb") as f:
            left = self.size
            while left > 0:
                block = f.read(min(BLOCK, left))
                if not block:
                    raise OSError(f"{self.path.name} is shorter than its envelope says")
                left -= len(block)
                yield block

    def read(self) -> bytes:
        return b"".join(self.blocks())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """A new message as it arrives: written block by block to a temporary file in the
    queue, so memory does not grow with the message; nothing is durable until the
    queue's writer ``finish``es it. Blocks are small writes into the page cache,
    cheap enough for the event loop."""

    def __init__(self, root: Path, qid: str) -> None:
        self.qid = qid
        self.root = root
        # joined as strings: pathlib's joins and conversions cost a message 20 us
        self._tmp = f"{root}/.{qid}.msg.tmp"
        self.final = f"{root}/{qid}.msg"
        self.size = 0
        self._kept: list[bytes] | None = []
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        _write_all(self._fd, data)
        self.size += len(data)
        if self._kept is not None:
            self._kept.append(data)
            if self.size > KEEP:
                self._kept = None

    def kept(self) -> bytes | None:
        """The whole message if it is small enough to have been kept in memory."""
        return None if self._kept is None else b"".join(self._kept)

    def read(self) -> bytes:
        """The message as written so far, from the file if it was not kept."""
        kept = self.kept()
        if kept is not None:
            return kept
        with open(self._tmp, "rb") as f:
            return f.read()

    def finish(self, envelope: Envelope) -> None:
        """Append the envelope, rename to the final name, fsync (blocking). Renamed
        first: on ext4 the one fsync then makes the data and the name durable
        together (``mxlab.nodes.durable``), so ``put_many`` fsyncs the directory only
        on other file systems, and no 250 goes out before it. A file renamed but cut
        short by a crash has no valid envelope line and is never loaded as mail."""
        _write_all(self._fd, _envelope_line(envelope))
        os.replace(self._tmp, self.final)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def discard(self) -> None:
        """Drop a message that will not be queued (refused, or its client left);
        once it is queued, this does nothing."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)


def write_envelope(root: Path, envelope: Envelope) -> None:
    """Replace the envelope atomically (per-recipient progress, next retry, hold)."""
    _write_synced(root / f"{envelope.id}.env", dump_json(envelope).encode())
    fsync_dir(root)


def remove_message(root: Path, qid: str) -> None:
    """Message first: a crash in between leaves an envelope without its message,
    dropped at the next start, never a message whose envelope went back in time. No
    directory fsync, as in Postfix: a power loss that undid the unlink would cost a
    duplicate, never a loss."""
    for name in (f"{root}/{qid}.msg", f"{root}/{qid}.env"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def apply_action(envelope: Envelope, action: str) -> bool:
    """Postfix's postsuper -h (hold), -H (release: back on its retry schedule) and
    postqueue -f (flush: due now, unless held) on one envelope; True if it changed."""
    if action == "hold" and envelope.state != "hold":
        envelope.state = "hold"
    elif action == "release" and envelope.state == "hold":
        envelope.state = "deferred"
    elif action == "flush" and envelope.state != "hold" and envelope.next_attempt > 0:
        envelope.next_attempt = 0.0
    else:
        return False
    return True


def queued_ids(root: Path) -> list[str]:
    """Ids of the messages in the queue directory, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p.name[:-4] for p in os.scandir(root) if p.name.endswith(".msg"))


class Queue:
    """Blocking file operations; the SMTP and delivery code run the slow ones (the
    fsyncs) in the writer thread or in a thread of their own."""

    def __init__(self, root: Path, duplicates: DuplicateFilter | None = None) -> None:
        self.root = root
        self.duplicates = duplicates
        root.mkdir(parents=True, exist_ok=True)
        self._dir_fsync = new_names_need_dir_fsync(root)  # for new messages' names
        self._journal_path = root / "delivered.journal"
        self._journal = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._journal_bytes = os.fstat(self._journal).st_size

    def close(self) -> None:
        os.close(self._journal)

    def _msg(self, qid: str) -> Path:
        return self.root / f"{qid}.msg"

    def spool(self, qid: str) -> Spool:
        """A temporary file for a message about to be received."""
        return Spool(self.root, qid)

    def put_many(
        self, messages: list[tuple[Envelope, Spool]], syncers: Executor | None = None
    ) -> None:
        """Store new messages durably, one directory fsync for all of them (if the
        file system needs one), then their duplicate-filter records; the caller
        acknowledges only after this returns. On failure none is kept. With
        ``syncers`` the files of a batch are fsynced in parallel: the file system
        commits its journal once for fsyncs that wait together (ext4's group commit),
        where one after the other costs a commit each."""

        def finish(message: tuple[Envelope, Spool]) -> None:
            envelope, spool = message
            envelope.size = spool.size
            spool.finish(envelope)

        try:
            if syncers is None or len(messages) < 2:
                for message in messages:
                    finish(message)
            else:
                list(syncers.map(finish, messages))  # raises the first failure
            if self._dir_fsync:
                fsync_dir(self.root)
        except OSError:
            for _, spool in messages:
                spool.discard()
                with contextlib.suppress(OSError):
                    os.unlink(spool.final)
            raise
        # Written, not fsynced: a kill cannot lose them (the kernel has them), and a
        # power loss only records of messages whose envelopes carry their digests
        # (put back at the next start) or that are gone already; at worst a duplicate,
        # never a loss, as with remove_message. It saves an fsync per message.
        self._remember([envelope for envelope, _ in messages], sync=False)

    def _remember(self, envelopes: list[Envelope], *, sync: bool = True) -> None:
        """Record the recipients of ``envelopes`` in the duplicate filter (and fsync
        it). After the messages: a record must never stand for a message not queued."""
        if self.duplicates is None:
            return
        for env in envelopes:
            if env.digest:
                rcpts = [r.address for r in env.recipients]
                _, missing = self.duplicates.check(env.digest, rcpts)
                self.duplicates.remember(env.digest, env.id, missing)
        if sync:
            self.duplicates.sync()

    def recall(self) -> None:
        """Record every queued message in the duplicate filter again, as ``load``
        does, for a receiver whose delivery process loaded the queue: a kill may have
        come between a message and its records."""
        envelopes: list[Envelope] = []
        for qid in queued_ids(self.root):
            with contextlib.suppress(OSError, ValueError):  # delivered meanwhile
                envelopes.append(read_envelope(self.root, qid))
        self._remember(envelopes)

    def put(self, envelope: Envelope, content: bytes) -> None:
        spool = self.spool(envelope.id)
        try:
            spool.write(content)
        except OSError:
            spool.discard()
            raise
        self.put_many([(envelope, spool)])

    def save(self, envelope: Envelope) -> None:
        """Replace the envelope atomically (per-recipient progress, next retry)."""
        write_envelope(self.root, envelope)

    def commit(self, qid: str, rcpts: list[str]) -> None:
        """Journal deliveries the moment the next hop confirms them: one unbuffered
        append, cheap enough for the event loop, so no await separates the 250 from
        its record. The kernel has it at once: a SIGKILL cannot make the relay send
        again; only a power loss could, which costs a duplicate, never a loss.
        ``save``/``remove`` at the end of the attempt make it permanent."""
        self._journal_bytes += os.write(
            self._journal, "".join(f"{qid} {r}\n" for r in rcpts).encode()
        )

    @property
    def journal_full(self) -> bool:
        """Worth emptying: an ext4 fsync of a new message also writes out the data of
        every file grown since the last commit (data=ordered), so a journal left to
        grow slows each 250 down; a few KiB do not, and spare a truncate (a journal
        transaction on the event loop) per message."""
        return self._journal_bytes > JOURNAL_SLACK

    def forget_journal(self) -> None:
        """Empty the journal; only when every attempt has saved what it recorded."""
        os.ftruncate(self._journal, 0)
        self._journal_bytes = 0

    def _replay_journal(self, envelopes: list[Envelope]) -> None:
        """Apply deliveries journaled before a crash, then persist and forget them."""
        for env in apply_journal(self.root, envelopes):
            self.save(env)
        self.forget_journal()
        os.fsync(self._journal)

    def data(self, envelope: Envelope) -> MessageData:
        """The message bytes, read in blocks when sent."""
        return MessageData(envelope.size, path=self._msg(envelope.id))

    def remove(self, qid: str) -> None:
        remove_message(self.root, qid)

    def load(self) -> tuple[list[Envelope], list[str]]:
        """Every queued envelope, and the names of files dropped as leftovers of a
        crash (temporary files, envelopes whose message is gone)."""
        envelopes: list[Envelope] = []
        dropped: list[str] = []
        for path in sorted(p for p in self.root.iterdir() if p.is_file()):
            crashed_write = path.name.startswith(".") and path.name.endswith(".tmp")
            if crashed_write or (path.suffix == ".env" and not self._msg(path.stem).exists()):
                path.unlink()
                dropped.append(path.name)
            elif path.suffix == ".msg":
                try:
                    envelopes.append(read_envelope(self.root, path.stem))
                except ValueError:  # unreadable: set aside like Postfix's "corrupt" queue
                    (self.root / "corrupt").mkdir(exist_ok=True)
                    for name in (path.name, f"{path.stem}.env"):
                        with contextlib.suppress(FileNotFoundError):
                            (self.root / name).rename(self.root / "corrupt" / name)
                    dropped.append(path.name)
        self._replay_journal(envelopes)
        self._remember(envelopes)  # a kill between a message and its records
        return envelopes, dropped


def apply_journal(root: Path, envelopes: list[Envelope]) -> list[Envelope]:
    """Mark the deliveries journaled in ``root`` on ``envelopes``; return those changed."""
    try:
        raw = (root / "delivered.journal").read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.decode("utf-8", "surrogateescape").splitlines()
    done = {tuple(line.split(" ", 1)) for line in lines if " " in line}
    changed = []
    for env in envelopes:
        hits = [r for r in env.recipients if r.state == "pending" and (env.id, r.address) in done]
        for rcpt in hits:
            rcpt.state, rcpt.reply = "delivered", rcpt.reply or "delivered before a restart"
        if hits:
            changed.append(env)
    return changed


class GroupWriter:
    """The queue's writer thread: new messages and removals that arrive together go
    in one batch, so the event loop never waits on the disk and a batch costs one
    thread hop and one directory fsync, while each message still has its own fsync
    before its 250."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="queue-writer")
        self._syncers = ThreadPoolExecutor(SYNCERS, thread_name_prefix="queue-fsync")
        self._puts: list[tuple[Envelope, Spool, asyncio.Future[None]]] = []
        self._removals: list[tuple[str, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def put(self, envelope: Envelope, spool: Spool) -> None:
        """Return once the message is durable; raise OSError when it could not be
        (a session that ends its DATA while the relay stops gets 451, not silence)."""
        if self._closed:
            spool.discard()
            raise OSError(errno.ESHUTDOWN, "the queue is closing: the relay is stopping")
        done = asyncio.get_running_loop().create_future()
        self._puts.append((envelope, spool, done))
        await self._kick(done)

    async def remove(self, qid: str) -> None:
        """Return once the message's files are unlinked."""
        if self._closed:  # the thread is gone: two unlinks, here
            with contextlib.suppress(OSError):
                self.queue.remove(qid)
            return
        done = asyncio.get_running_loop().create_future()
        self._removals.append((qid, done))
        await self._kick(done)

    async def _kick(self, done: asyncio.Future[None]) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._puts or self._removals:
                puts, self._puts = self._puts, []
                removals, self._removals = self._removals, []
                try:
                    await loop.run_in_executor(
                        self._pool,
                        self._work,
                        [(e, c) for e, c, _ in puts],
                        [qid for qid, _ in removals],
                    )
                except OSError as exc:
                    _settle([done for *_, done in puts], exc)
                else:
                    _settle([done for *_, done in puts])
                _settle([done for _, done in removals])
        finally:
            self._task = None

    def _work(self, puts: list[tuple[Envelope, Spool]], removals: list[str]) -> None:
        for qid in removals:
            with contextlib.suppress(OSError):
                self.queue.remove(qid)
        if puts:
            self.queue.put_many(puts, self._syncers)

    async def close(self) -> None:
        """Finish what is being written, then stop the thread."""
        self._closed = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=True)
        self._syncers.shutdown(wait=True)


def _settle(futures: list[asyncio.Future[None]], exc: BaseException | None = None) -> None:
    for done in futures:
        if done.done():
            continue  # its waiter gave up (cancelled)
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
