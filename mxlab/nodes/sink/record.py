"""The sink's record: one message per pair of files in its directory, ``ID.eml`` (the
bytes as received) and ``ID.json`` (the envelope), each fsynced before the 250. The
JSON file is renamed into place last: a reader lists JSON files and so never sees half
a message. Written by the sink node, read by the lab (``Lab.sink``) and ``mxlab sink``."""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mxlab.nodes.durable import fsync_dir
from mxlab.nodes.message import message_id

_COUNTER = itertools.count()


@dataclass(frozen=True)
class SinkMessage:
    id: str
    mail_from: str
    rcpt_tos: list[str]
    peer: str  # the client's address
    received: float  # Unix time of the 250
    data: bytes
    tls: str | None = None  # the TLS version the client started ("TLSv1.3"), or None

    @property
    def message_id(self) -> str:
        """The Message-ID header's value ("" when it has none)."""
        return message_id(self.data)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def keep(
    directory: Path,
    mail_from: str,
    rcpt_tos: list[str],
    peer: str,
    data: bytes,
    tls: str | None = None,
) -> str:
    """Store one message durably (DESIGN: Durability) and return its id."""
    tmp = directory / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    now = time.time()
    msg_id = f"{time.time_ns()}-{os.getpid()}-{next(_COUNTER)}"
    envelope = {
        "mail_from": mail_from,
        "rcpt_tos": rcpt_tos,
        "peer": peer,
        "received": now,
        "tls": tls,
    }
    _write(tmp / f"{msg_id}.eml", data)
    _write(tmp / f"{msg_id}.json", json.dumps(envelope).encode())
    os.rename(tmp / f"{msg_id}.eml", directory / f"{msg_id}.eml")
    os.rename(tmp / f"{msg_id}.json", directory / f"{msg_id}.json")
    fsync_dir(directory)
    return msg_id


def messages(directory: Path) -> list[SinkMessage]:
    """Every message the sink kept, oldest first (none when it received nothing yet)."""
    found = []
    for meta in sorted(directory.glob("*.json"), key=lambda p: p.name.split("-")[0]):
        envelope = json.loads(meta.read_bytes())
        found.append(
            SinkMessage(
                id=meta.stem,
                mail_from=envelope["mail_from"],
                rcpt_tos=envelope["rcpt_tos"],
                peer=envelope["peer"],
                received=envelope["received"],
                data=meta.with_suffix(".eml").read_bytes(),
                tls=envelope.get("tls"),  # records from before STARTTLS have none
            )
        )
    return found
