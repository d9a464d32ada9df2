"""Helpers for the store tests (no tests here): a config for a throwaway store, and the
store started as a real node process. Loopback 127.20.0.0/16 only."""

from __future__ import annotations

import imaplib
import poplib
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxlab.nodes.config import StoreNodeConfig, StoreUser
from mxlab.nodes.passwords import hash_password
from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.mailstore import MailStore

PASSWORDS = {"alice@alpha.test": "alice-pw", "bob@alpha.test": "bob-pw"}
_HASHES = {addr: hash_password(pw) for addr, pw in PASSWORDS.items()}


def store_config(
    state_dir: Path,
    address: str = "127.20.0.1",
    ports: tuple[int, int, int] = (0, 0, 0),
    **extra: Any,
) -> StoreNodeConfig:
    lmtp, imap, pop3 = ports
    return StoreNodeConfig(
        lab="t",
        node="store1",
        fqdn="store.alpha.test",
        address=address,
        state_dir=str(state_dir),
        lmtp_port=lmtp,
        imap_port=imap,
        pop3_port=pop3,
        domains=["alpha.test"],
        users={a: StoreUser(password_hash=h) for a, h in _HASHES.items()},
        **{"allow_plaintext_auth": True, **extra},  # these tests log in without TLS
    )


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> MailStore:
    """A MailStore under tmp_path: what the sans-IO sessions run against."""
    return MailStore(tmp_path / "mail")


@pytest.fixture(name="auth")
def auth_fixture(tmp_path: Path) -> Authenticator:
    return Authenticator(store_config(tmp_path))


def message(subject: str = "hello", body: bytes = b"line one\r\nline two\r\n") -> bytes:
    return (
        b"From: Carol <carol@beta.test>\r\nTo: alice@alpha.test\r\n"
        b"Subject: "
        + subject.encode()
        + b"\r\nMessage-ID: <"
        + subject.encode()
        + b"@beta.test>\r\n"
        b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\n" + body
    )


class StoreProcess:
    """The store as the lab runs it: ``python -m mxlab.nodes store --config X.json``."""

    def __init__(self, tmp: Path, address: str, **extra: Any) -> None:
        self.tmp = tmp
        self.address = address
        self.config = store_config(tmp / "state", address, _ports(address), **extra)
        self.config_path = tmp / "store.json"
        self.config_path.write_text(self.config.model_dump_json())
        self.log = tmp / "store.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mxlab.nodes", "store", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"store exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.config.imap_port), 1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("store did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def lmtp(self) -> smtplib.LMTP:
        return smtplib.LMTP(self.address, self.config.lmtp_port, "relay.alpha.test", timeout=10)

    def imap(self, user: str = "alice@alpha.test") -> imaplib.IMAP4:
        imap = imaplib.IMAP4(self.address, self.config.imap_port, timeout=10)
        imap.login(user, PASSWORDS[user])
        return imap

    def pop3(self, user: str = "alice@alpha.test") -> poplib.POP3:
        pop = poplib.POP3(self.address, self.config.pop3_port, timeout=10)
        pop.user(user)
        pop.pass_(PASSWORDS[user])
        return pop


def running_store(tmp: Path, address: str, **extra: Any) -> Iterator[StoreProcess]:
    """A started store for a fixture to ``yield from``; stopped afterwards."""
    store = StoreProcess(tmp, address, **extra)
    store.start()
    try:
        yield store
    finally:
        store.stop()


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _ports(address: str) -> tuple[int, int, int]:
    return free_port(address), free_port(address), free_port(address)


def deliver(node: StoreProcess, data: bytes, rcpts: list[str] | None = None) -> None:
    with node.lmtp() as lmtp:
        refused = lmtp.sendmail("carol@beta.test", rcpts or ["alice@alpha.test"], data)
        assert refused == {}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
