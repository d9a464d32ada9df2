"""DATA streamed to the spool file: dot-stuffing, SIZE and the line rules hold
wherever the blocks split; a 1 MB and a near-limit 30 MB message relay intact
while the relay's memory does not grow with them; a SIGKILL mid-DATA loses nothing
that was acknowledged and leaves nothing behind."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.lab.checks import split_trace
from mxlab.nodes.config import Endpoint
from mxlab.nodes.relay.esmtp import QUEUE_UNAVAILABLE, read_data
from mxlab.nodes.relay.queue import Spool
from mxlab.nodes.relay.smtpd import Incoming
from mxlab.nodes.relay.trace import MAX_LINE, LineCheck
from tests.conftest import wait_for
from tests.test_relay_support import RelayProcess, Sink, message, new_address, relay_config

LIMIT = 31 * 1024 * 1024  # the relay's SIZE in these tests
GROWTH = 12 * 1024 * 1024  # the most a 30 MB message may add to the relay's peak RSS


def unstuff(wire: bytes) -> bytes:
    """RFC 5321 §4.5.2 the simple way: the reference the streaming reader must match."""
    lines = wire[: -len(b".\r\n")].split(b"\r\n")[:-1]
    return b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n" for line in lines)


def stream(wire: bytes, *, limit: int | None = None, block: int = 16) -> tuple[object, bytes]:
    """Run read_data over ``wire`` with a tiny reader limit, so blocks split often."""
    error, _, content = stream_dots(wire, limit=limit, block=block)
    return error, content


def stream_dots(
    wire: bytes, *, limit: int | None = None, block: int = 16
) -> tuple[str | None, bool, bytes]:
    """read_data's error and dot report, and the content it streamed out."""

    async def go() -> tuple[str | None, bool, bytes]:
        reader = asyncio.StreamReader(limit=block)
        reader.feed_data(wire)
        reader.feed_eof()
        out: list[bytes] = []
        error, dotted = await read_data(reader, limit, out.append)
        return error, dotted, b"".join(out)

    return asyncio.run(go())


def test_dot_unstuffing_holds_across_any_block_split() -> None:
    rng = random.Random(18)
    for block in (3, 4, 5, 7, 16, 64):
        for _ in range(60):
            lines = [
                rng.choice([b"", b".", b"..", b"...x", b".\r", b"a.b", b"x" * rng.randrange(40)])
                for _ in range(rng.randrange(1, 30))
            ]
            content = b"".join(line.replace(b"\r", b"") + b"\r\n" for line in lines)
            wire = content.replace(b"\r\n.", b"\r\n..")
            wire = (b"." + wire if wire.startswith(b".") else wire) + b".\r\n"
            assert unstuff(wire) == content  # the reference agrees with the stuffing
            error, dotted, got = stream_dots(wire, block=block)
            assert error is None and got == content, (block, wire)
            # no line began with a dot: the next hop gets the content unstuffed
            assert dotted is (b"\r\n." in b"\r\n" + content), (block, wire)


def test_the_data_ends_only_at_a_dot_line_even_split_in_pieces() -> None:
    wire = b"a\r\n.\r\nb\r\n.\r\n"  # "a", then the end; what follows is the next command
    error, got = stream(wire, block=3)
    assert (error, got) == (None, b"a\r\n")
    smuggled = b"a\n.\r\nb\r\n.\r\n"  # a bare LF before the dot does not end it
    error, got = stream(smuggled, block=3)
    assert error is None and got == b"a\n.\r\nb\r\n"
    check = LineCheck()
    for n in range(0, len(got), 2):
        check.feed(got[n : n + 2])
    check.close()
    assert check.bare  # and the message is refused for its bare LF


def test_an_empty_message() -> None:
    assert stream(b".\r\n", block=3) == (None, b"")


def test_size_is_enforced_while_streaming_and_the_rest_is_drained() -> None:
    content = b"x" * 70 + b"\r\n"
    wire = content * 100 + b".\r\n"
    error, _ = stream(wire, limit=len(content) * 99, block=64)
    assert error == "552 5.3.4 message size exceeds fixed maximum message size"
    error, got = stream(wire, limit=len(content) * 100, block=64)
    assert error is None and got == content * 100


def test_a_long_line_is_seen_across_blocks() -> None:
    for size in (MAX_LINE, MAX_LINE + 1, 5000):
        wire = b"a\r\n" + b"y" * size + b"\r\nb\r\n.\r\n"
        error, got = stream(wire, block=16)
        assert error is None and got == wire[:-3]
        check = LineCheck()
        for n in range(0, len(got), 7):
            check.feed(got[n : n + 7])
        check.close()
        assert check.too_long is (size > MAX_LINE) and not check.bare, size


def test_line_rules_match_a_line_by_line_reference_wherever_blocks_split() -> None:
    """Bare CR or LF and the longest line, against the plain reading of each line."""
    rng = random.Random(18)
    for _ in range(2000):
        data = bytes(rng.choice(b"ab.\r\n") for _ in range(rng.randrange(40)))
        if rng.random() < 0.2:
            data += b"y" * rng.randrange(MAX_LINE, MAX_LINE + 20) + b"\r\n"
        lines = data.split(b"\r\n")
        bare = any(b"\r" in line or b"\n" in line for line in lines)
        check = LineCheck()
        step = rng.randrange(1, 9)
        for n in range(0, len(data), step):
            check.feed(data[n : n + step])
        check.close()
        assert check.bare is bare, data
        if not bare:
            assert check.too_long is (max(map(len, lines)) > MAX_LINE), data


def test_a_long_line_is_found_among_many_in_large_blocks() -> None:
    """The relay's blocks are up to 64 KiB of many lines: a line one byte too long
    anywhere among them, or none, against the plain reading of each line."""
    rng = random.Random(1870)
    for _ in range(300):
        lines = [b"z" * rng.randrange(MAX_LINE - 120, MAX_LINE + 1) for _ in range(60)]
        if rng.random() < 0.5:
            lines[rng.randrange(len(lines))] = b"y" * rng.randrange(MAX_LINE + 1, MAX_LINE + 3)
        data = b"\r\n".join(lines) + b"\r\n"
        check = LineCheck()
        step = rng.randrange(1000, 70000)
        for n in range(0, len(data), step):
            check.feed(data[n : n + step])
        check.close()
        assert not check.bare
        assert check.too_long is (max(map(len, lines)) > MAX_LINE)


# -- the relay process ---------------------------------------------------------------


@pytest.fixture
def hop() -> Iterator[Sink]:
    sink = Sink().start()
    yield sink
    sink.stop()


@pytest.fixture
def relay(tmp_path: Path, hop: Sink) -> Iterator[RelayProcess]:
    config = relay_config(
        tmp_path,
        trusted_clients=["127.0.0.1"],
        next_hop=hop.endpoint,
        max_message_size=LIMIT,
        mailauth={"verify": False},  # nothing here needs the message whole
    )
    process = RelayProcess(config, tmp_path).start()
    yield process
    process.stop()


def peak_rss(relay: RelayProcess) -> int:
    """The relay's peak resident memory so far (VmHWM), in bytes."""
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def big(size: int) -> bytes:
    """A message of ``size`` bytes whose lines start with dots here and there."""
    head = message(f"big {size}")
    line = b".dotted line " + b"z" * 60 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    return head + body + b"y" * (size - len(head) - len(body) - 2) + b"\r\n"


def relay_one(relay: RelayProcess, hop: Sink, content: bytes) -> bytes:
    """Send ``content`` through the relay; what the next hop got, our trace removed."""
    before = len(hop.messages)
    with relay.smtp() as client:
        client.sendmail("alice@alpha.test", ["bob@beta.test"], content)
    wait_for(lambda: len(hop.messages) > before, timeout=60, what="the message at the hop")
    return split_trace(hop.messages[-1].content)[1]


def test_large_messages_stream_through_without_growing_the_relay(
    relay: RelayProcess, hop: Sink
) -> None:
    assert relay_one(relay, hop, message("warm up")).endswith(b"body of warm up\r\n")
    small = big(1024 * 1024)
    assert relay_one(relay, hop, small) == small
    baseline = peak_rss(relay)
    huge = big(LIMIT - 64 * 1024)
    assert relay_one(relay, hop, huge) == huge
    growth = peak_rss(relay) - baseline
    assert growth < GROWTH, f"the relay's peak RSS grew {growth >> 20} MiB for a 31 MB message"
    queue = Path(relay.config.state_dir) / "queue"
    wait_for(lambda: not list(queue.glob("*.msg")), what="an empty queue")


def test_over_the_limit_is_552_and_leaves_no_file(relay: RelayProcess) -> None:
    with relay.smtp() as client:
        client.mail("alice@alpha.test")
        client.rcpt("bob@beta.test")
        code, text = client.data(big(LIMIT + 1024))
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.noop()[0] == 250  # the session goes on
    queue = Path(relay.config.state_dir) / "queue"
    assert not [p.name for p in queue.iterdir() if p.name.endswith((".msg", ".tmp"))]


def test_sigkill_mid_data_loses_nothing_acknowledged(tmp_path: Path) -> None:
    hop = Endpoint(host=new_address(), port=2525)  # down until the restart
    config = relay_config(tmp_path, trusted_clients=["127.0.0.1"], next_hop=hop)
    relay = RelayProcess(config, tmp_path).start()
    sink = Sink(address=hop.host, port=hop.port)
    try:
        acked = message("acknowledged")
        with relay.smtp() as client:
            client.mail("alice@alpha.test")
            client.rcpt("bob@beta.test")
            code, text = client.data(acked)
        assert code == 250
        qid = text.decode().rsplit(" ", 1)[1]
        # a second message, cut off mid-DATA: its first 200 KB are spooled, then -9
        with socket.create_connection((config.address, config.smtp_port)) as sock:
            f = sock.makefile("rb")
            f.readline()
            for command in (b"EHLO c.test", b"MAIL FROM:<a@alpha.test>", b"RCPT TO:<b@beta.test>"):
                sock.sendall(command + b"\r\n")
                while f.readline()[3:4] == b"-":
                    pass
            sock.sendall(b"DATA\r\n")
            assert f.readline().startswith(b"354")
            sock.sendall(message("cut off") + b"x" * 70 * 3000)
            queue = Path(config.state_dir) / "queue"
            wait_for(lambda: list(queue.glob(".*.tmp")), what="the cut-off message spooling")
            relay.kill()
        sink.start()
        relay.start()
        relay.wait_event("delivered", queue_id=qid)
        wait_for(lambda: not list(queue.iterdir()) or _only_journal(queue), what="a clean queue")
        assert [split_trace(m.content)[1] for m in sink.messages] == [acked]
        assert [e["file"] for e in relay.events("queue_dropped")][-1].endswith(".msg.tmp")
    finally:
        relay.stop()
        sink.stop()


def _only_journal(queue: Path) -> bool:
    return [p.name for p in queue.iterdir()] == ["delivered.journal"]


def test_a_failed_spool_write_is_answered_451_once_the_data_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, "Q1")
    message = Incoming(spool, b"Received: by us\r\n", "a@alpha.test", 0.0)

    def disk_full(data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "write", disk_full)
    message.write(b"Subject: s\r\n\r\nbody\r\n")  # read on: the client is still sending
    message.write(b"more\r\n")
    assert message.refusal(max_received=30) == QUEUE_UNAVAILABLE
    assert list(tmp_path.iterdir()) == []  # the partial file is gone
