"""Queue administration from outside the relay (``mxlab queue``): list, flush, hold,
release, delete — Postfix's mailq, postqueue -f and postsuper -h/-H/-d.

A running relay is asked, so it acts on its live schedule: the host writes a request
file into ``<state_dir>/control/`` and signals the relay with SIGUSR1; the relay
writes the reply file next to it. That needs nothing but the state directory and a
signal, so it works the same for a local process and for a container (the node
directory is bind-mounted, ``Runtime.signal`` reaches the process). A stopped relay
is not asked: the same actions are applied to its queue files directly, and it
picks them up when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mxlab.nodes.config import dump_json, parse_json
from mxlab.nodes.host_signals import handle
from mxlab.nodes.relay.queue import (
    Envelope,
    apply_action,
    apply_journal,
    own_queue,
    queued_ids,
    read_envelope,
    remove_message,
    write_envelope,
)

if TYPE_CHECKING:
    from mxlab.nodes.relay.delivery import Delivery

SIGNAL = signal.SIGUSR1  # "a queue request is waiting in control/"
Action = Literal["list", "flush", "hold", "release", "delete"]
ACTIONS: tuple[Action, ...] = ("list", "flush", "hold", "release", "delete")


@dataclass(frozen=True, kw_only=True)
class Request:
    action: Action
    ids: list[str] | None = None  # None: every message


@dataclass(kw_only=True)
class Reply:
    live: bool  # answered by the running relay (else: read from its files)
    messages: list[Envelope] = field(default_factory=list)  # for list
    done: list[str] = field(default_factory=list)  # acted on now
    # already so (flush of a held message, release of a free one)
    unchanged: list[str] = field(default_factory=list)
    # in delivery now: hold/delete apply when the attempt ends
    later: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not in the queue
    error: str = ""


def control_dir(state_dir: Path) -> Path:
    return state_dir / "control"


def queue_dir(state_dir: Path) -> Path:
    return state_dir / "queue"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- the relay's side -----------------------------------------------------------------


async def take_over(delivery: Delivery) -> int:
    """Make ``delivery`` the one deliverer of its relay's queue, in whichever process
    delivers: hold the delivery lock, load the queue, then answer ``mxlab queue``.
    Returns the lock's descriptor, held until closed."""
    config = delivery.config
    lock = await own_queue(config.state_path, config.node)
    await delivery.resume()
    ControlChannel(config.state_path, delivery).install()
    return lock


class ControlChannel:
    """Answers the request files in ``control/`` whenever SIGUSR1 arrives."""

    def __init__(self, state_dir: Path, delivery: Delivery) -> None:
        self.dir = control_dir(state_dir)
        self.delivery = delivery
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def install(self) -> None:
        handle(SIGNAL, self.poke)

    def poke(self) -> None:
        """A request may be waiting: answer it (one pass at a time, another after)."""
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            self._again = True
            while self._again:
                self._again = False
                for path in sorted(self.dir.glob("*.req")) if self.dir.is_dir() else []:
                    await self._answer(path)
        finally:
            self._task = None

    async def _answer(self, path: Path) -> None:
        try:
            request = parse_json(Request, path.read_bytes())
        except FileNotFoundError:
            return  # its sender gave up and took it back
        except ValueError as exc:
            reply = Reply(live=True, error=f"bad request: {exc}")
        else:
            reply = await answer(self.delivery, request)
        with contextlib.suppress(OSError):
            _write_atomic(path.with_suffix(".res"), dump_json(reply).encode())
            path.unlink()


async def answer(delivery: Delivery, request: Request) -> Reply:
    """Carry out one request on the running relay's queue."""
    if request.action == "list":
        return Reply(live=True, messages=delivery.listing())
    result = await delivery.admin(request.action, request.ids)
    return Reply(
        live=True,
        done=result["done"],
        unchanged=result["unchanged"],
        later=result["later"],
        missing=result["missing"],
    )


# -- the host's side ------------------------------------------------------------------


def ask(
    state_dir: Path, request: Request, poke: Callable[[], None], timeout: float = 10.0
) -> Reply:
    """Ask the running relay whose state directory is ``state_dir``; ``poke`` sends
    it the signal. Raises TimeoutError when no reply comes."""
    directory = control_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():x}-{secrets.token_hex(4)}"
    req, res = directory / f"{name}.req", directory / f"{name}.res"
    _write_atomic(req, dump_json(request).encode())
    try:
        poke()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return parse_json(Reply, res.read_bytes())
            except FileNotFoundError:
                time.sleep(0.02)
        raise TimeoutError(f"no reply within {timeout:.0f}s")
    finally:
        req.unlink(missing_ok=True)
        res.unlink(missing_ok=True)


def read_queue(state_dir: Path) -> list[Envelope]:
    """The queue as its files say, deliveries journaled since applied (read only)."""
    root = queue_dir(state_dir)
    envelopes = []
    for qid in queued_ids(root):
        with contextlib.suppress(OSError, ValueError):  # removed or half-written just now
            envelopes.append(read_envelope(root, qid))
    apply_journal(root, envelopes)
    return [e for e in envelopes if e.pending()]


def offline(state_dir: Path, request: Request) -> Reply:
    """Carry out a request on the files of a relay that is not running."""
    envelopes = {e.id: e for e in read_queue(state_dir)}
    if request.action == "list":
        return Reply(live=False, messages=sorted(envelopes.values(), key=lambda e: e.arrival))
    root = queue_dir(state_dir)
    reply = Reply(live=False)
    for qid in list(envelopes) if request.ids is None else request.ids:
        env = envelopes.get(qid)
        if env is None:
            reply.missing.append(qid)
            continue
        if request.action == "delete":
            remove_message(root, qid)
        elif apply_action(env, request.action):
            write_envelope(root, env)
        else:
            reply.unchanged.append(qid)
            continue
        reply.done.append(qid)
    return reply
