"""The relay's outbound client pipelines (RFC 2920): with PIPELINING advertised,
MAIL, every RCPT and DATA reach the server before it has answered any of them; without
it, each command waits for its reply. Per-recipient refusals are handled either way.
The peer is a recording server in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field

import pytest

from mxlab.nodes.relay.queue import MessageData
from mxlab.nodes.relay.routing import Hop
from mxlab.nodes.relay.sessions import SessionCache
from mxlab.nodes.relay.transport import (
    ClientIdentity,
    DsnParams,
    Outcome,
    Transfer,
    failure,
    send,
)

CONTENT = b"Subject: t\r\n\r\n.a line with a leading dot\r\nbody\r\n"
WAIT = 5.0  # how long the server holds MAIL's reply back for the rest of a batch


@dataclass
class Recorder:
    """An SMTP server that answers MAIL only once DATA has arrived too (when it
    advertises PIPELINING), and notes what the client had sent before each reply."""

    pipelining: bool
    refuse: dict[str, str] = field(default_factory=dict)  # RCPT address -> reply
    mail_reply: str = "250 2.1.0 Ok"
    before_first_reply: bytes = b""  # what arrived before we answered MAIL
    early: list[bytes] = field(default_factory=list)  # commands sent before their turn
    commands: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    wire: list[bytes] = field(default_factory=list)  # each DATA as it came, dot-stuffed

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 recorder ESMTP\r\n")
        accepted = 0
        while line := await reader.readline():
            command = line.rstrip(b"\r\n")
            self.commands.append(command)
            verb = command[:4].upper()
            if verb in (b"MAIL", b"RCPT", b"DATA", b"RSET") and reader._buffer:  # noqa: SLF001
                self.early.append(command)
            if verb == b"EHLO":
                extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                writer.write(b"250-recorder\r\n" + extra + b"250 SIZE 1000000\r\n")
            elif verb == b"MAIL":
                if self.pipelining:
                    try:
                        rest = await asyncio.wait_for(reader.readuntil(b"DATA\r\n"), WAIT)
                    except TimeoutError:
                        rest = b""
                    self.before_first_reply = line + rest
                    # answer the batch in order, as a pipelining server does
                    replies, accepted = self._batch([line, *rest.splitlines(keepends=True)])
                    writer.write(replies)
                    if self.mail_reply.startswith("2") and accepted:
                        await self._data(reader, writer)
                    continue
                writer.write(self.mail_reply.encode() + b"\r\n")
                accepted = 0
            elif verb == b"RCPT":
                reply = self._rcpt(command)
                accepted += reply.startswith("2")
                writer.write(reply.encode() + b"\r\n")
            elif verb == b"DATA":
                if not accepted:
                    writer.write(b"554 5.5.1 no valid recipients\r\n")
                    continue
                writer.write(b"354 go ahead\r\n")
                await self._data(reader, writer)
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
        writer.close()

    def _rcpt(self, command: bytes) -> str:
        address = command.split(b"<", 1)[1].split(b">", 1)[0].decode()
        return self.refuse.get(address, "250 2.1.5 Ok")

    def _batch(self, lines: list[bytes]) -> tuple[bytes, int]:
        out, accepted = [self.mail_reply], 0
        for line in lines[1:]:
            command = line.rstrip(b"\r\n")
            self.commands.append(command)
            if command.upper().startswith(b"RCPT"):
                reply = self._rcpt(command) if self.mail_reply.startswith("2") else "503 5.5.1"
                accepted += reply.startswith("2")
                out.append(reply)
            elif command.upper() == b"DATA":
                ok = self.mail_reply.startswith("2") and accepted
                out.append("354 go ahead" if ok else "554 5.5.1 no valid recipients")
        return "".join(f"{r}\r\n" for r in out).encode(), accepted

    async def _data(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(b"\r\n.\r\n")
        self.wire.append(data)
        self.messages.append(data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n."))
        writer.write(b"250 2.0.0 Ok: queued\r\n")


def deliver(
    recorder: Recorder, rcpts: list[str], content: bytes = CONTENT, *, dot_lines: bool = True
) -> dict[str, Outcome]:
    """One delivery attempt from our transport to the recorder."""

    async def go() -> dict[str, Outcome]:
        server = await asyncio.start_server(recorder.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cache = SessionCache()
        try:
            data = MessageData(len(content), content)
            transfer = Transfer("sender@alpha.test", data, [], DsnParams(), dot_lines=dot_lines)
            me = ClientIdentity("relay.test", "127.0.0.1", None)
            hop = Hop("recorder", "127.0.0.1", port)
            return await send([hop], rcpts, transfer, me, cache, lambda _: None)
        finally:
            cache.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(go())


def test_commands_arrive_before_any_reply_when_pipelining_is_offered() -> None:
    recorder = Recorder(pipelining=True)
    out = deliver(recorder, ["a@beta.test", "b@beta.test"])
    assert recorder.before_first_reply == (
        b"MAIL FROM:<sender@alpha.test> SIZE=%d\r\n"
        b"RCPT TO:<a@beta.test>\r\nRCPT TO:<b@beta.test>\r\nDATA\r\n" % len(CONTENT)
    )
    assert {r: o.reply for r, o in out.items()} == dict.fromkeys(
        ["a@beta.test", "b@beta.test"], "250 2.0.0 Ok: queued"
    )
    assert recorder.messages == [CONTENT]  # dot-stuffed on the wire, intact here


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    recorder = Recorder(pipelining=False)
    out = deliver(recorder, ["a@beta.test", "b@beta.test"])
    assert recorder.early == []
    assert [c.split(b":")[0] for c in recorder.commands[1:5]] == [
        b"MAIL FROM",
        b"RCPT TO",
        b"RCPT TO",
        b"DATA",
    ]
    assert all(o.reply == "250 2.0.0 Ok: queued" for o in out.values())
    assert recorder.messages == [CONTENT]


def test_content_known_to_have_no_dot_lines_goes_unstuffed_and_intact() -> None:
    plain = b"Subject: t\r\n\r\nthe end of a sentence.\r\n.\tnot at the start\r\n"
    plain = plain.replace(b"\r\n.\t", b"\r\n\t")
    recorder = Recorder(pipelining=True)
    deliver(recorder, ["a@beta.test"], plain, dot_lines=False)
    assert recorder.wire == [plain + b".\r\n"] and recorder.messages == [plain]
    recorder = Recorder(pipelining=True)
    deliver(recorder, ["a@beta.test"])  # a line begins with a dot: stuffed
    assert b"\r\n\r\n..a line" in recorder.wire[0] and recorder.messages == [CONTENT]


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_refused_recipient_keeps_its_own_reply(pipelining: bool) -> None:
    recorder = Recorder(pipelining, refuse={"b@beta.test": "550 5.1.1 no such user"})
    out = deliver(recorder, ["a@beta.test", "b@beta.test"])
    assert out["a@beta.test"].reply == "250 2.0.0 Ok: queued"
    assert out["b@beta.test"].reply == "550 5.1.1 no such user"
    assert out["b@beta.test"].kind == "bounced" and out["a@beta.test"].kind == "delivered"
    assert recorder.messages == [CONTENT]


@pytest.mark.parametrize("pipelining", [True, False])
def test_every_recipient_refused_sends_no_data_and_resets(pipelining: bool) -> None:
    refuse = {"a@beta.test": "450 4.2.1 try later", "b@beta.test": "550 5.1.1 no such user"}
    recorder = Recorder(pipelining, refuse=refuse)
    out = deliver(recorder, ["a@beta.test", "b@beta.test"])
    assert {r: o.reply for r, o in out.items()} == refuse
    assert recorder.messages == []
    assert b"RSET" in recorder.commands


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_refused_sender_answers_for_every_recipient(pipelining: bool) -> None:
    recorder = Recorder(pipelining, mail_reply="553 5.7.1 sender refused")
    out = deliver(recorder, ["a@beta.test", "b@beta.test"])
    assert {o.reply for o in out.values()} == {"553 5.7.1 sender refused"}
    assert recorder.messages == []
    assert recorder.commands[-1] == b"RSET"  # back in step for the next transaction


@pytest.mark.parametrize(
    ("error", "said"),
    [
        # asyncio's own wording of a refused connect, and uvloop's: the same deferral
        (
            ConnectionRefusedError(111, "Connect call failed ('10.0.0.5', 25)"),
            "ConnectionRefusedError: [Errno 111] Connection refused",
        ),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "ConnectionRefusedError: [Errno 111] Connection refused",
        ),
        # codes that are not errno values keep their own text
        (
            socket.gaierror(-2, "Name or service not known"),
            "gaierror: [Errno -2] Name or service not known",
        ),
        (ssl.SSLError(1, "wrong version number"), "SSLError: wrong version number"),
        (TimeoutError(), "TimeoutError: "),
    ],
)
def test_connection_failures_read_the_same_on_any_event_loop(error: OSError, said: str) -> None:
    assert failure(error) == said
