"""The relay with its delivery process (queue.delivery_process): two processes that
live and die together, and still answer ``mxlab queue`` and SIGHUP as one node.
Exactly once across a SIGKILL is in test_relay_delivery.py, run both ways."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mxlab.nodes.config import Endpoint, RelayNodeConfig, dump_json
from mxlab.nodes.relay import qmgr
from mxlab.nodes.relay.queue import LOCK_FILE, Envelope, Queue, Recipient, new_queue_id
from mxlab.nodes.relay.queue_admin import SIGNAL, Request, ask
from mxlab.nodes.reload import digest
from tests.conftest import run, wait_for
from tests.test_relay_support import RelayProcess, Sink, message, new_address, relay_config

QUEUE = {"retry_initial": 0.2, "retry_max": 0.5, "lifetime": 30.0, "delivery_process": True}


def delivery_pid(relay: RelayProcess) -> int:
    """The delivery process: the relay's one child, running mxlab.nodes.relay.qmgr."""
    assert relay.proc is not None
    pid = relay.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    child = int(children[0])
    assert b"mxlab.nodes.relay.qmgr" in Path(f"/proc/{child}/cmdline").read_bytes()
    return child


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def send(relay: RelayProcess, subject: str) -> str:
    with relay.smtp() as client:
        client.mail("alice@alpha.test")
        client.rcpt("bob@beta.test")
        code, text = client.data(message(subject))
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def test_the_delivery_process_delivers_and_dies_with_the_relay(
    tmp_path: Path, cleanup: list
) -> None:
    sink = run(cleanup, Sink())
    config = relay_config(
        tmp_path, trusted_clients=["127.0.0.1"], next_hop=sink.endpoint, queue=QUEUE
    )
    relay = run(cleanup, RelayProcess(config, tmp_path))
    child = delivery_pid(relay)
    qid = send(relay, "two processes")
    relay.wait_event("delivered", queue_id=qid)
    assert [m.rcpts for m in sink.messages] == [["bob@beta.test"]]
    # one node to its operator: the events of both processes in its one log
    assert relay.events("received")[0]["queue_id"] == qid
    relay.kill()
    wait_for(lambda: gone(child), what="the delivery process to die with the relay")


def test_the_relay_ends_when_its_delivery_process_dies(tmp_path: Path, cleanup: list) -> None:
    config = relay_config(tmp_path, next_hop=Endpoint(host=new_address(), port=2525), queue=QUEUE)
    relay = run(cleanup, RelayProcess(config, tmp_path))
    os.kill(delivery_pid(relay), signal.SIGKILL)
    assert relay.proc is not None
    assert relay.proc.wait(10) != 0
    assert "the delivery process ended" in relay.log_path.read_text()


def test_a_stop_ends_both_and_keeps_the_queue(tmp_path: Path, cleanup: list) -> None:
    hop = Endpoint(host=new_address(), port=2525)  # down: the message stays queued
    config = relay_config(tmp_path, trusted_clients=["127.0.0.1"], next_hop=hop, queue=QUEUE)
    relay = run(cleanup, RelayProcess(config, tmp_path))
    child = delivery_pid(relay)
    qid = send(relay, "kept")
    relay.wait_event("deferred", queue_id=qid)
    relay.stop()
    assert relay.proc is not None and relay.proc.returncode == 0
    assert gone(child)
    assert (config.state_path / "queue" / f"{qid}.msg").exists()


def test_queue_requests_and_sighup_reach_the_delivery_process(
    tmp_path: Path, cleanup: list
) -> None:
    hop = Endpoint(host=new_address(), port=2525)  # down at first
    config = relay_config(tmp_path, trusted_clients=["127.0.0.1"], next_hop=hop, queue=QUEUE)
    relay = run(cleanup, RelayProcess(config, tmp_path))
    assert relay.proc is not None
    pid = relay.proc.pid
    qid = send(relay, "held, then sent elsewhere")
    relay.wait_event("deferred", queue_id=qid)

    def poke() -> None:
        os.kill(pid, SIGNAL)  # to the relay, as `mxlab queue` does: it passes it on

    held = ask(config.state_path, Request(action="hold", ids=[qid]), poke)
    assert held.live and held.done + held.later == [qid]  # later: in an attempt now

    def listing() -> list[tuple[str, str]]:
        reply = ask(config.state_path, Request(action="list"), poke)
        return [(e.id, e.state) for e in reply.messages]

    wait_for(lambda: listing() == [(qid, "hold")], what="the message held")
    sink = run(cleanup, Sink())
    moved = relay_config(
        tmp_path,
        address=config.address,
        trusted_clients=["127.0.0.1"],
        next_hop=sink.endpoint,
        queue=QUEUE,
    )
    new_config = dump_json(moved).encode()
    (config.state_path.parent / "config.json").write_bytes(new_config)
    os.kill(pid, signal.SIGHUP)
    applied = config.state_path / "config.applied"
    # marked applied by the relay once its delivery process has the config in force
    wait_for(lambda: applied.exists() and applied.read_text().strip() == digest(new_config))
    assert len(relay.events("reloaded")) == 1
    released = ask(config.state_path, Request(action="release", ids=[qid]), poke)
    assert released.done == [qid]
    relay.wait_event("delivered", queue_id=qid)
    assert [m.rcpts for m in sink.messages] == [["bob@beta.test"]]


@pytest.mark.parametrize("delivery_process", [False, True], ids=["one", "qmgr"])
def test_a_relay_does_not_deliver_from_a_queue_another_process_holds(
    tmp_path: Path, cleanup: list, delivery_process: bool
) -> None:
    config = relay_config(tmp_path, queue={**QUEUE, "delivery_process": delivery_process})
    config.state_path.mkdir(parents=True)
    held = os.open(config.state_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        relay = RelayProcess(config, tmp_path)
        cleanup.append(relay)
        with pytest.raises(AssertionError, match="another process delivers from"):
            relay.start()
    finally:
        os.close(held)


@pytest.mark.parametrize("delivery_process", [False, True], ids=["one", "qmgr"])
def test_a_queue_request_and_a_reload_while_the_relay_starts_are_answered(
    tmp_path: Path, cleanup: list, delivery_process: bool
) -> None:
    """SIGUSR1 and SIGHUP end a process by default: a relay signalled before it has its
    handlers (held back here by the delivery lock, which the test takes first) must
    keep them and answer once it has taken the queue over (host_signals)."""
    config = relay_config(tmp_path, queue={**QUEUE, "delivery_process": delivery_process})
    config.state_path.mkdir(parents=True)
    lock = config.state_path / LOCK_FILE
    held = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    relay = RelayProcess(config, tmp_path)
    cleanup.append(relay)
    relay.proc = subprocess.Popen(
        [sys.executable, "-m", "mxlab.nodes", "relay", "--config", str(relay.config_path)]
    )
    pid = relay.proc.pid

    def waits_for_the_lock() -> bool:
        tree = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        fds = [f for p in tree for f in Path(f"/proc/{p}/fd").iterdir()]
        return any(os.readlink(f) == str(lock) for f in fds if f.exists())

    wait_for(waits_for_the_lock, what="the relay, waiting for the delivery lock")
    replies: list[Any] = []
    poked = threading.Event()

    def poke() -> None:
        os.kill(pid, SIGNAL)  # pending in the relay once this returns
        poked.set()

    asking = threading.Thread(
        target=lambda: replies.append(ask(config.state_path, Request(action="list"), poke))
    )
    asking.start()
    assert poked.wait(10)
    rewritten = dump_json(config).encode() + b"\n"
    (config.state_path.parent / "config.json").write_bytes(rewritten)
    os.kill(pid, signal.SIGHUP)
    os.close(held)  # the relay takes over the queue, then handles both signals
    asking.join(15)
    assert [r.live for r in replies] == [True]
    applied = config.state_path / "config.applied"
    wait_for(lambda: applied.exists() and applied.read_text().strip() == digest(rewritten))
    assert relay.proc.poll() is None


class FakeDelivery:
    """What the delivery process's input hands on, recorded."""

    def __init__(self, config: RelayNodeConfig) -> None:
        self.config = config
        self.taken: list[tuple[str, bytes | None, bool]] = []
        self.configs: list[RelayNodeConfig] = []

    def take(self, env: Envelope, content: bytes | None, *, dot_lines: bool = True) -> None:
        self.taken.append((env.id, content, dot_lines))

    def reload(self, new: RelayNodeConfig) -> None:
        self.configs.append(new)


def handoffs(tmp_path: Path) -> tuple[Queue, FakeDelivery, int, int]:
    """A queue, a delivery to hand to, and the two ends of the reply pipe."""
    queue = Queue(tmp_path / "queue")
    delivery = FakeDelivery(relay_config(tmp_path))
    reply_r, reply_w = os.pipe()
    return queue, delivery, reply_w, reply_r


def test_the_delivery_process_reads_again_what_it_could_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, delivery, reply, _ = handoffs(tmp_path)
    content = message("read late")
    env = Envelope(
        id=new_queue_id(), sender="a@alpha.test", recipients=[Recipient(address="b@beta.test")],
        arrival=time.time(),
    )  # fmt: skip
    queue.put(env, content)
    failures = [OSError(errno.EMFILE, "Too many open files")]
    real = qmgr.read_new

    def out_of_files_once(root: Path, qid: str) -> tuple[Envelope, bytes | None]:
        if failures:
            raise failures.pop()
        return real(root, qid)

    monkeypatch.setattr(qmgr, "read_new", out_of_files_once)
    monkeypatch.setattr(qmgr, "RETRY", 0.01)

    async def hand_over() -> None:
        ended = asyncio.get_running_loop().create_future()
        lines = qmgr._Handoffs(queue, delivery, reply, ended)  # type: ignore[arg-type]
        lines.data_received(f"{env.id} 0\nGONE 1".encode())
        assert delivery.taken == []  # the first read failed
        lines.data_received(b"\n")  # the rest of a line: a message that is not there
        deadline = time.monotonic() + 5
        while not delivery.taken and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(hand_over())
    assert delivery.taken == [(env.id, content, False)]  # once, read whole, unstuffed


def test_a_config_handed_over_is_put_in_force_and_acknowledged(tmp_path: Path) -> None:
    queue, delivery, reply, acks = handoffs(tmp_path)
    new = relay_config(tmp_path, next_hop=Endpoint(host="127.30.9.9", port=2525))

    async def hand_over() -> None:
        ended = asyncio.get_running_loop().create_future()
        lines = qmgr._Handoffs(queue, delivery, reply, ended)  # type: ignore[arg-type]
        lines.data_received(b"config " + dump_json(new).encode() + b"\n")

    asyncio.run(hand_over())
    assert [c.next_hop for c in delivery.configs] == [new.next_hop]
    assert os.read(acks, 10) == b"R"
