"""The on-disk mail queue. "250 queued" means the message and its envelope are
fsynced under their final names: each file is written to a temporary name, fsynced,
renamed, and the directory fsynced (the maildir discipline). A killed relay resumes
every envelope it finds; a message file without an envelope was never acknowledged.

Layout under ``<state_dir>/queue/``: ``<id>.msg`` (the bytes as received, trace
header first), ``<id>.env`` (JSON envelope with per-recipient state) and
``delivered.journal`` (deliveries not yet written into their envelopes).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

QueueState = Literal["incoming", "active", "deferred", "hold"]
RcptState = Literal["pending", "delivered", "bounced"]


class Recipient(BaseModel):
    address: str
    state: RcptState = "pending"
    reply: str = ""  # the last reply or diagnostic, for logs and DSNs
    hop: str = ""  # the host that gave it
    notify: list[str] = []  # RFC 3461 §4.1 NOTIFY values, empty = default
    orcpt: str = ""  # RFC 3461 §4.2 ORCPT, kept for the DSN


class Envelope(BaseModel):
    id: str
    sender: str  # "" is the null reverse-path of bounces
    recipients: list[Recipient]
    arrival: float
    message_id: str = ""
    mail_options: list[str] = []  # BODY=8BITMIME, SMTPUTF8: forwarded to the next hop
    ret: str = ""  # RFC 3461 §4.3 RET=FULL|HDRS
    envid: str = ""  # RFC 3461 §4.4 ENVID
    state: QueueState = "incoming"
    attempts: int = 0
    warned: bool = False  # a delay notice went out (QueuePolicy.delay_warning)
    next_attempt: float = 0.0

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]


def new_queue_id() -> str:
    """Postfix-style: time-ordered hex, then randomness so ids never collide."""
    return f"{time.time_ns() // 1000:X}{secrets.token_hex(3).upper()}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    """Temporary name, fsync, rename: the file is whole or absent after a crash."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Queue:
    """Blocking file operations; the SMTP and delivery code run them in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._journal_path = root / "delivered.journal"
        self._journal = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def close(self) -> None:
        os.close(self._journal)

    def _msg(self, qid: str) -> Path:
        return self.root / f"{qid}.msg"

    def _env(self, qid: str) -> Path:
        return self.root / f"{qid}.env"

    def put(self, envelope: Envelope, content: bytes) -> None:
        """Store a new message durably; the caller acknowledges only after this."""
        _write_synced(self._msg(envelope.id), content)
        _write_synced(self._env(envelope.id), envelope.model_dump_json().encode())
        _fsync_dir(self.root)

    def save(self, envelope: Envelope) -> None:
        """Replace the envelope atomically (per-recipient progress, next retry)."""
        _write_synced(self._env(envelope.id), envelope.model_dump_json().encode())
        _fsync_dir(self.root)

    def commit(self, qid: str, rcpts: list[str]) -> None:
        """Journal deliveries the moment the next hop confirms them: one unbuffered
        append, cheap enough for the event loop, so no await separates the 250 from
        its record. The kernel has it at once: a SIGKILL cannot make the relay send
        again; only a power loss could, which costs a duplicate, never a loss.
        ``save``/``remove`` at the end of the attempt make it permanent."""
        os.write(self._journal, "".join(f"{qid} {r}\n" for r in rcpts).encode())

    def forget_journal(self) -> None:
        """Empty the journal; only when every attempt has saved what it recorded."""
        os.ftruncate(self._journal, 0)

    def _replay_journal(self, envelopes: list[Envelope]) -> None:
        """Apply deliveries journaled before a crash, then persist and forget them."""
        with open(self._journal_path, "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()
        done = {tuple(line.split(" ", 1)) for line in lines if " " in line}
        for env in envelopes:
            hits = [r for r in env.recipients if (env.id, r.address) in done]
            for rcpt in hits:
                rcpt.state, rcpt.reply = "delivered", rcpt.reply or "delivered before a restart"
            if hits:
                self.save(env)
        self.forget_journal()
        os.fsync(self._journal)

    def read(self, qid: str) -> bytes:
        return self._msg(qid).read_bytes()

    def remove(self, qid: str) -> None:
        """Envelope first: a crash in between leaves an orphan message, never a
        queued envelope without its message. No directory fsync, as in Postfix: a
        power loss that undid the unlink would cost a duplicate, never a loss."""
        self._env(qid).unlink(missing_ok=True)
        self._msg(qid).unlink(missing_ok=True)

    def load(self) -> tuple[list[Envelope], list[str]]:
        """Every queued envelope, and the names of files dropped as leftovers of a
        crash (temporary files, messages whose envelope was never written)."""
        envelopes: list[Envelope] = []
        dropped: list[str] = []
        for path in sorted(p for p in self.root.iterdir() if p.is_file()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()
                dropped.append(path.name)
            elif path.suffix == ".env":
                try:
                    envelopes.append(Envelope.model_validate_json(path.read_bytes()))
                except ValueError:  # unreadable: set aside like Postfix's "corrupt" queue
                    (self.root / "corrupt").mkdir(exist_ok=True)
                    path.rename(self.root / "corrupt" / path.name)
                    dropped.append(path.name)
            elif path.suffix == ".msg" and not self._env(path.stem).exists():
                path.unlink()
                dropped.append(path.name)
        self._replay_journal(envelopes)
        return envelopes, dropped
