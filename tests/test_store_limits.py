"""The store's limits and robustness over real sockets: idle timeouts before and after
login, line and literal limits, sessions per user, and a fuzz run of random bytes on
many IMAP and POP3 connections that must leave the server serving and log no error.

The store runs in this process (its own event loop in a thread) so the tests can set
small limits and see every exception the loop would otherwise only log."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxlab.nodes.config import LoginLimits
from mxlab.nodes.store.server import StoreLimits, serve
from tests.test_store_support import PASSWORDS, free_port, message, store_config

LIMITS = StoreLimits(
    max_literal=4096,
    max_line=1024,
    max_user_sessions=3,
    login_timeout=0.4,
    imap_timeout=0.8,
    pop3_timeout=0.8,
)


class InProcessStore:
    def __init__(self, tmp: Path, limits: StoreLimits) -> None:
        self.address = f"127.20.{random.randint(100, 199)}.{random.randint(2, 250)}"
        ports = (free_port(self.address), free_port(self.address), free_port(self.address))
        # fast failed logins: the fuzz fails many; their delays have tests of their own
        quick = LoginLimits(failure_delay=0.001, max_delay=0.001)
        self.config = store_config(tmp / "state", self.address, ports, login_limits=quick)
        self.limits = limits
        self.errors: list[dict[str, Any]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """asyncio.run: on stop it cancels the open sessions' tasks too."""
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.task = asyncio.current_task()
        await serve(self.config, self.limits)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with self.connect(self.config.pop3_port) as sock:
                    if sock.recv(64).startswith(b"+OK"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("store did not come up")

    def stop(self) -> None:
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)

    def connect(self, port: int) -> socket.socket:
        sock = socket.create_connection((self.address, port), 5)
        sock.settimeout(5)
        return sock


@pytest.fixture(scope="module", name="node")
def node_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessStore]:
    node = InProcessStore(tmp_path_factory.mktemp("limits"), LIMITS)
    node.start()
    try:
        yield node
    finally:
        node.stop()
    assert node.errors == []  # nothing reached the loop's exception handler


def read_until(sock: socket.socket, pattern: bytes) -> bytes:
    """Everything up to and including ``pattern``, or up to the peer's close."""
    data = b""
    while pattern not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def imap_login(node: InProcessStore, user: str = "alice@alpha.test") -> socket.socket:
    sock = node.connect(node.config.imap_port)
    read_until(sock, b"\r\n")
    sock.sendall(f"L LOGIN {user} {PASSWORDS[user]}\r\n".encode())
    assert b"L OK" in read_until(sock, b"L ")
    return sock


def test_idle_connections_are_closed_before_and_after_login(node: InProcessStore) -> None:
    started = time.monotonic()
    with node.connect(node.config.imap_port) as sock:
        out = read_until(sock, b"autologout")
        assert out.startswith(b"* OK") and b"* BYE autologout" in out
        assert sock.recv(10) == b""  # closed
    before_login = time.monotonic() - started
    assert before_login < LIMITS.imap_timeout  # the short pre-login timer applied
    with imap_login(node) as sock:
        started = time.monotonic()
        assert b"* BYE autologout" in read_until(sock, b"autologout")
        assert time.monotonic() - started >= LIMITS.imap_timeout * 0.9
    with node.connect(node.config.pop3_port) as sock:
        sock.sendall(b"USER bob@alpha.test\r\nPASS bob-pw\r\n")
        out = read_until(sock, b"messages")
        started = time.monotonic()
        assert sock.recv(100) == b""  # RFC 1939 §3: closed without a reply, no UPDATE
        assert time.monotonic() - started >= LIMITS.pop3_timeout * 0.9
        assert b"+OK maildrop" in out


def test_long_lines_and_big_literals_are_refused_and_the_session_goes_on(
    node: InProcessStore,
) -> None:
    with imap_login(node) as sock:
        sock.sendall(b"a NOOP " + b"x" * 3000 + b"\r\nb NOOP\r\n")
        out = read_until(sock, b"b OK")
        assert b"a BAD line too long" in out and b"b OK NOOP" in out
        sock.sendall(b"c APPEND INBOX {5000}\r\nd NOOP\r\n")
        out = read_until(sock, b"d OK")
        assert b"c BAD literal too large" in out and b"+ " not in out
        sock.sendall(b"e APPEND INBOX {5000+}\r\n")  # the client sends it regardless
        out = read_until(sock, b"cannot resynchronise")
        assert b"e BAD literal too large" in out and b"* BYE" in out
    with node.connect(node.config.pop3_port) as sock:
        read_until(sock, b"\r\n")
        sock.sendall(b"NOOP " + b"y" * 2000 + b"\r\nCAPA\r\n")
        out = read_until(sock, b"\r\n.\r\n")
        assert out.startswith(b"-ERR line too long\r\n+OK capability list")


def test_sessions_per_user_over_the_limit_get_no_and_others_are_served(
    node: InProcessStore,
) -> None:
    socks = [imap_login(node, "bob@alpha.test") for _ in range(LIMITS.max_user_sessions)]
    try:
        with node.connect(node.config.imap_port) as extra:
            read_until(extra, b"\r\n")
            extra.sendall(b"a LOGIN bob@alpha.test bob-pw\r\n")
            assert read_until(extra, b"\r\n") == b"a NO [LIMIT] too many sessions for this user\r\n"
        with imap_login(node) as other:  # alice is not bob
            other.sendall(b"z LOGOUT\r\n")
            assert b"z OK" in read_until(other, b"z OK")
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 5  # the server notices the closes
    while time.monotonic() < deadline:
        with node.connect(node.config.imap_port) as again:
            read_until(again, b"\r\n")
            again.sendall(b"a LOGIN bob@alpha.test bob-pw\r\n")
            if read_until(again, b"\r\n").startswith(b"a OK"):
                return
        time.sleep(0.02)
    pytest.fail("session slots were not released")


_IMAP_WORDS = [
    b"a1 LOGIN alice@alpha.test alice-pw\r\n",
    b"a2 SELECT INBOX\r\n",
    b"a3 FETCH 1:* (BODY[1.MIME] ENVELOPE BODYSTRUCTURE BODY.PEEK[]<0.9>)\r\n",
    b"a4 UID STORE 1 +FLAGS (\\Seen)\r\n",
    b"a5 SEARCH OR TEXT x NOT UID 1:*\r\n",
    b"a6 IDLE\r\n",
    b"DONE\r\n",
    b"a7 APPEND INBOX {10}\r\n",
    b"a8 FETCH 1 (FLAGS) {3+}\r\n",
    b"a9 AUTHENTICATE PLAIN\r\n",
    b"b1 STARTTLS\r\n",
    b"b2 COPY 1:* Trash\r\n",
    b"b3 (((\r\n",
    b'b4 LIST "" "\\\r\n',
]
_POP3_WORDS = [
    b"USER alice@alpha.test\r\n",
    b"PASS alice-pw\r\n",
    b"RETR 1\r\n",
    b"TOP 1 x\r\n",
    b"AUTH PLAIN\r\n",
    b"UIDL 99\r\n",
]


def _fuzz(
    node: InProcessStore, port: int, words: list[bytes], rng: random.Random, got: list[bytes]
) -> None:
    """One connection's worth of fuzz; what the server answered goes to ``got``."""
    received = b""
    with node.connect(port) as sock:
        sock.settimeout(2)
        for _ in range(rng.randint(1, 25)):
            chunk = rng.choice(words)
            noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
            roll = rng.random()
            if roll < 0.2:
                chunk = noise + b"\r\n"
            elif roll < 0.35:  # a command with bytes flipped or cut short
                at = rng.randrange(len(chunk))
                chunk = chunk[:at] + noise[:3] + chunk[at + rng.randint(0, 3) :]
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server hung up on us (e.g. after BYE): fine
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
    got.append(received)


def test_a_fuzz_run_never_crashes_the_server(node: InProcessStore) -> None:
    with node.connect(node.config.lmtp_port) as lmtp:
        read_until(lmtp, b"\r\n")
        lmtp.sendall(
            b"LHLO fuzz\r\nMAIL FROM:<f@beta.test>\r\nRCPT TO:<alice@alpha.test>\r\nDATA\r\n"
            + message("fuzz")
            + b".\r\nQUIT\r\n"
        )
        assert b"250 2.0.0" in read_until(lmtp, b"221")
    rng = random.Random(7)
    got: list[bytes] = []
    threads = [
        threading.Thread(
            target=_fuzz,
            args=(node, port, words, random.Random(rng.random()), got),
        )
        for _ in range(20)
        for port, words in (
            (node.config.imap_port, _IMAP_WORDS),
            (node.config.pop3_port, _POP3_WORDS),
        )
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert node.errors == []
    answers = b"".join(got)
    assert len(got) == len(threads)
    # the fuzz reached past the greeting: errors, logins and mailbox commands answered
    for seen in (b" BAD ", b"-ERR ", b" OK [CAPABILITY", b"+OK maildrop", b"EXISTS"):
        assert seen in answers, seen
    with imap_login(node) as sock:  # still serving, and the mail is intact
        sock.sendall(b"s EXAMINE INBOX\r\nf FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]\r\n")
        out = read_until(sock, b"f OK")
        assert b"Subject: fuzz" in out


def test_stopping_with_sessions_open_logs_nothing(tmp_path: Path) -> None:
    """Sessions still open when the node stops are cancelled; none may reach the loop's
    exception handler (Python 3.11 reported each one there; cpython gh-113538)."""
    node = InProcessStore(tmp_path, LIMITS)
    node.start()
    try:
        imap = imap_login(node)
        pop3 = node.connect(node.config.pop3_port)
        assert read_until(pop3, b"\r\n").startswith(b"+OK")
    finally:
        node.stop()
    with imap, pop3:
        assert imap.recv(100) == b"" and pop3.recv(100) == b""  # both sessions ended
    assert not node.thread.is_alive()
    assert node.errors == []
