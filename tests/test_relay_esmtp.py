"""The relay's additions to aiosmtpd without a network: the block-wise DATA reader,
the per-client connection budget, the fast path parser for plain paths."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP

from mxlab.nodes.relay.esmtp import READ_LIMIT, ConnectionBudget, RelaySMTP, read_data


def read(chunks: list[bytes], limit: int | None = None) -> tuple[bytes | str, bytes]:
    """read_data over a stream fed ``chunks``; its result and what stays unread."""

    async def go() -> tuple[bytes | str, bytes]:
        reader = asyncio.StreamReader(limit=READ_LIMIT)
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        out: list[bytes] = []  # the blocks read_data streams out
        error, _ = await read_data(reader, limit, out.append)
        return (b"".join(out) if error is None else error), await reader.read()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),  # an empty message
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..lead\r\nmid\r\n..\r\n.\r\n", b".lead\r\nmid\r\n.\r\n"),  # RFC 5321 §4.5.2
        (b"end of a sentence.\r\nnext\r\n.\r\n", b"end of a sentence.\r\nnext\r\n"),
        (b"bare\n.\r\nstill data\r\n.\r\n", b"bare\n.\r\nstill data\r\n"),  # no smuggling
        (b"bare\r.\r\nstill data\r\n.\r\n", b"bare\r.\r\nstill data\r\n"),
    ],
)
def test_the_lone_dot_ends_the_data_and_dots_are_unstuffed(wire: bytes, content: bytes) -> None:
    assert read([wire + b"QUIT\r\n"]) == (content, b"QUIT\r\n")  # pipelined rest stays


def test_a_terminator_split_across_reads() -> None:
    wire = b"x\r\n.\r\n"
    for cut in range(1, len(wire)):
        assert read([wire[:cut], wire[cut:]])[0] == b"x\r\n", cut


def test_a_message_larger_than_the_read_buffer() -> None:
    body = b"".join(b"line %06d ..dots stay\r\n" % n for n in range(20_000))  # ~480 KiB
    got, rest = read([body[i : i + 7000] for i in range(0, len(body), 7000)] + [b".\r\nNOOP\r\n"])
    assert got == body and rest == b"NOOP\r\n" and len(body) > 4 * READ_LIMIT


def test_size_is_enforced_while_reading() -> None:
    assert read([b"a" * 98 + b"\r\n.\r\n"], limit=100) == (b"a" * 98 + b"\r\n", b"")
    reply, rest = read([b"a" * 99 + b"\r\n", b"b" * 500_000 + b"\r\n.\r\nRSET\r\n"], limit=100)
    assert reply == "552 5.3.4 message size exceeds fixed maximum message size"
    assert rest == b"RSET\r\n"  # the rest of the data was read, and dropped


def test_connection_budget_counts_per_client_and_exempts_the_trusted() -> None:
    budget = ConnectionBudget(["127.0.0.9"], limit=2)
    assert budget.admit("10.0.0.1") and budget.admit("10.0.0.1")
    assert not budget.admit("10.0.0.1")
    assert budget.admit("10.0.0.2")
    assert all(budget.admit("127.0.0.9") for _ in range(5))
    budget.release("10.0.0.1")
    assert budget.admit("10.0.0.1")
    for _ in range(5):
        budget.release("127.0.0.9")
    assert budget.open == {"10.0.0.1": 2, "10.0.0.2": 1}


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.test>",
        " <a.b@c-d.test> SIZE=12 BODY=8BITMIME",
        "<a@b.test>  ",
        "<x+y=z@q.test>SIZE=1",
        "<a@b.test> \tX=1",
        '<"q r"@x.test>',
        "<a..b@x.test>",
        "<@a,@b:c@d.test>",
        "<>",
        "<jörg@x.test>",
        "a@b.test",
        "<a@[192.0.2.1]>",
    ],
)
def test_the_fast_path_parses_paths_as_aiosmtpd_does(arg: str) -> None:
    async def both() -> tuple[object, object]:
        return SMTP._getaddr(SMTP(object()), arg), RelaySMTP(object())._getaddr(arg)

    ours, theirs = asyncio.run(both())
    assert ours == theirs


def test_the_idle_timeout_moves_with_each_command_and_then_closes() -> None:
    """One timer per session: commands before the deadline keep it open, silence
    past it ends it (aiosmtpd's timeout, re-armed lazily)."""

    async def go() -> tuple[list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: RelaySMTP(object(), timeout=0.4), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await reader.readline()  # the greeting
            replies = []
            for _ in range(6):  # 0.6 s in all, more than the timeout
                await asyncio.sleep(0.1)
                writer.write(b"NOOP\r\n")
                replies.append(await reader.readline())
            async with asyncio.timeout(10):
                rest = await reader.read()  # the server hangs up once we are silent
            return replies, rest
        finally:
            writer.close()
            server.close()

    replies, rest = asyncio.run(go())
    assert all(r.startswith(b"250") for r in replies)
    assert rest == b""
