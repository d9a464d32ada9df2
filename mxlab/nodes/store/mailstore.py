"""A user's mail as the protocols see it: Maildir++ files plus the index, and the
change feed that tells every other session of the same mailbox what happened (new
mail, expunges, flag changes) — the source of IMAP's untagged EXISTS/EXPUNGE/FETCH
and of IDLE wake-ups, pushed, never polled."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mxlab.nodes.store.imap_fetch import describe
from mxlab.nodes.store.index import FlagUpdate, Index, MailboxInfo, MessageInfo
from mxlab.nodes.store.maildir import INBOX, Maildir

# RFC 6154 §2: the folders every user gets, with their SPECIAL-USE attribute
SPECIAL_FOLDERS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
INDEX_FILE = "mxlab-index.sqlite"
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True)
class Change:
    """One change to a mailbox, as other sessions must learn of it."""

    kind: str  # "exists" | "expunge" | "flags"
    uids: tuple[int, ...]
    flags: dict[int, frozenset[str]] = field(default_factory=dict)
    origin: object = None  # the session that made it, which reports it itself
    modseq: int = 0  # the mod-sequence a flag change got (RFC 7162 §3.2)


class Watcher(Protocol):
    def mailbox_changed(self, change: Change) -> None: ...


def crlf(data: bytes) -> bytes:
    """RFC 5322 §2.3 line ends: a bare LF from a careless client becomes CRLF, so the
    stored form is the one IMAP sizes and POP3 byte-stuffing assume."""
    return _BARE_LF.sub(b"\r\n", data) if b"\n" in data else data


def canonical_mailbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 §5.1); every other name is as given."""
    return INBOX if name.upper() == INBOX else name


def _described(data: bytes) -> dict[str, bytes]:
    """ENVELOPE/BODY/BODYSTRUCTURE to cache; none (a cache miss later, never a failed
    delivery) when the message defeats the parser."""
    try:
        return describe(data)
    except Exception:
        return {}


class UserMail:
    """One user's mailboxes; every method is synchronous and quick except where noted."""

    def __init__(self, root: Path) -> None:
        self.maildir = Maildir(root)
        self.maildir.create_folder(INBOX)
        self.index = Index(root / INDEX_FILE)
        self.watchers: dict[str, set[Watcher]] = {}
        self._recover()

    def _recover(self) -> None:
        """Make the index agree with the files: a file delivered just before a crash
        gets a UID, a row whose file vanished goes (the files are the truth)."""
        known = {m.name for m in self.index.mailboxes()}
        for name in self.maildir.folders_on_disk():
            if name not in known:
                self.index.create_mailbox(name, SPECIAL_FOLDERS.get(name))
                if name == INBOX:
                    self.index.subscribe(INBOX, True)  # for clients that only read LSUB
                known.add(name)
        for name, use in SPECIAL_FOLDERS.items():
            if name not in known:
                self.create(name, use)
                self.index.subscribe(name, True)
        for info in self.index.mailboxes():
            self.maildir.create_folder(info.name)
            rows = self.index.messages(info.name)
            on_disk = set(self.maildir.files(info.name))
            gone = [m.uid for m in rows if m.path not in on_disk]
            if gone:
                self.index.remove_messages(info.name, gone)
            indexed = {m.path for m in rows}
            new = sorted(on_disk - indexed, key=lambda p: p.split("/", 1)[1])
            if new:
                items: list[tuple[str, int, float, frozenset[str]]] = []
                for path in new:
                    data = self.maildir.read(info.name, path)
                    items.append(
                        (path, len(data), self.maildir.mtime(info.name, path), frozenset())
                    )
                self.index.add_messages(info.name, items)

    # -- change feed -----------------------------------------------------------------

    def watch(self, mailbox: str, watcher: Watcher) -> None:
        self.watchers.setdefault(mailbox, set()).add(watcher)

    def unwatch(self, mailbox: str, watcher: Watcher) -> None:
        self.watchers.get(mailbox, set()).discard(watcher)

    def _announce(self, mailbox: str, change: Change) -> None:
        for watcher in list(self.watchers.get(mailbox, ())):
            watcher.mailbox_changed(change)

    # -- mailboxes -------------------------------------------------------------------

    def mailbox(self, name: str) -> MailboxInfo | None:
        return self.index.mailbox(canonical_mailbox(name))

    def mailboxes(self) -> list[MailboxInfo]:
        return self.index.mailboxes()

    def create(self, name: str, special_use: str | None = None) -> None:
        self.maildir.create_folder(name)
        self.index.create_mailbox(name, special_use)

    def delete(self, name: str) -> None:
        self._announce(name, Change("expunge", tuple(m.uid for m in self.messages(name))))
        self.index.delete_mailbox(name)
        self.maildir.delete_folder(name)

    def rename(self, old: str, new: str) -> None:
        self.maildir.rename_folder(old, new)
        self.index.rename_mailbox(old, new)

    # -- messages --------------------------------------------------------------------

    def messages(self, mailbox: str, after_uid: int = 0) -> list[MessageInfo]:
        return self.index.messages(canonical_mailbox(mailbox), after_uid)

    def read(self, mailbox: str, path: str) -> bytes:
        return self.maildir.read(canonical_mailbox(mailbox), path)

    def add_written(
        self,
        mailbox: str,
        path: str,
        size: int,
        flags: frozenset[str] = frozenset(),
        date: float | None = None,
        data: bytes | None = None,
    ) -> int:
        """Index a file already written by ``maildir.deliver`` and tell the watchers;
        with its ``data``, also cache what FETCH ENVELOPE/BODYSTRUCTURE will show."""
        mailbox = canonical_mailbox(mailbox)
        (uid,) = self.index.add_messages(mailbox, [(path, size, date or time.time(), flags)])
        if data is not None:
            items = _described(data)
            self.index.put_cached(mailbox, {(uid, name): v for name, v in items.items()})
        self._announce(mailbox, Change("exists", (uid,)))
        return uid

    def append(self, mailbox: str, data: bytes, flags: frozenset[str], date: float | None) -> int:
        """APPEND of one message: write durably (blocking fsync, small for a lab), index."""
        return self.append_many(mailbox, [(data, flags, date)])[0]

    def append_many(
        self, mailbox: str, messages: list[tuple[bytes, frozenset[str], float | None]]
    ) -> list[int]:
        """MULTIAPPEND (RFC 3502 §6.3.11) and COPY: all or none. Every file is
        written first (a failure removes the ones written), then all are indexed in
        one transaction, with consecutive UIDs, and announced as one change."""
        if not messages:
            return []
        mailbox = canonical_mailbox(mailbox)
        written: list[tuple[str, int, float, frozenset[str]]] = []
        texts = []
        try:
            for data, flags, date in messages:
                data = crlf(data)
                path = self.maildir.deliver(mailbox, data, mtime=date)
                written.append((path, len(data), date or time.time(), flags))
                texts.append(data)
        except BaseException:
            for path, *_ in written:
                self.maildir.remove(mailbox, path)
            raise
        uids = self.index.add_messages(mailbox, written)
        cache: dict[tuple[int, str], bytes] = {}
        for uid, data in zip(uids, texts, strict=True):
            cache.update({(uid, name): v for name, v in _described(data).items()})
        self.index.put_cached(mailbox, cache)
        self._announce(mailbox, Change("exists", tuple(uids)))
        return uids

    def set_flags(
        self, mailbox: str, changes: dict[int, frozenset[str]], origin: object = None
    ) -> int:
        """Store flag changes; return their mod-sequence (0 when nothing changed)."""
        if not changes:
            return 0
        modseq = self.index.set_flags(mailbox, list(changes.items()))
        self._announce(mailbox, Change("flags", tuple(changes), changes, origin, modseq))
        return modseq

    def update_flags(
        self,
        mailbox: str,
        uids: list[int],
        change: Callable[[frozenset[str]], frozenset[str]],
        unchanged_since: int | None = None,
        origin: object = None,
    ) -> FlagUpdate:
        """STORE: an atomic read-modify-write in the index (see ``Index.update_flags``),
        then every other session of the mailbox is told."""
        result = self.index.update_flags(mailbox, uids, change, unchanged_since)
        if result.changed:
            changed = result.changed
            self._announce(mailbox, Change("flags", tuple(changed), changed, origin, result.modseq))
        return result

    def expunge(self, mailbox: str, messages: list[MessageInfo], origin: object = None) -> None:
        """Remove messages: index rows first, so a crash between leaves an orphan file
        that ``_recover`` re-adds rather than a row pointing at nothing."""
        if not messages:
            return
        self.index.remove_messages(mailbox, [m.uid for m in messages])
        self._removed(mailbox, messages, origin)

    def expunge_deleted(
        self, mailbox: str, uids: list[int] | None = None, origin: object = None
    ) -> list[MessageInfo]:
        """IMAP EXPUNGE/CLOSE: remove what is \\Deleted in the index now (RFC 3501
        §6.4.3), never what a session's stale copy says."""
        gone = self.index.expunge_deleted(mailbox, uids)
        if gone:
            self._removed(mailbox, gone, origin)
        return gone

    def _removed(self, mailbox: str, messages: list[MessageInfo], origin: object) -> None:
        for m in messages:
            self.maildir.remove(mailbox, m.path)
        self._announce(mailbox, Change("expunge", tuple(m.uid for m in messages), {}, origin))

    def claim_recent(self, mailbox: str, uid: int) -> int:
        """The \\Recent mark before this claim (RFC 3501 §2.3.2): UIDs above it and up
        to ``uid`` are \\Recent for the caller alone."""
        return self.index.claim_recent(mailbox, uid)

    def close(self) -> None:
        self.index.close()


class MailStore:
    """Every user's mail under ``<state_dir>/mail/<address>/``, opened on first use,
    plus the POP3 maildrop locks (RFC 1939 §8) and the count of logged-in sessions
    per user, shared by all sessions."""

    def __init__(self, root: Path, max_user_sessions: int = 20) -> None:
        self.root = root
        self.users: dict[str, UserMail] = {}
        self.pop3_locked: set[str] = set()
        self.max_user_sessions = max_user_sessions
        self.sessions: dict[str, int] = {}

    def open_session(self, address: str) -> bool:
        """Count a login; False when the user already has the most sessions allowed
        (a runaway client must not take the store from everyone else)."""
        count = self.sessions.get(address, 0)
        if count >= self.max_user_sessions:
            return False
        self.sessions[address] = count + 1
        return True

    def close_session(self, address: str) -> None:
        count = self.sessions.get(address, 0) - 1
        if count > 0:
            self.sessions[address] = count
        else:
            self.sessions.pop(address, None)

    def user(self, address: str) -> UserMail:
        address = address.lower()
        if address not in self.users:
            self.users[address] = UserMail(self.root / address)
        return self.users[address]

    def close(self) -> None:
        for user in self.users.values():
            user.close()
        self.users.clear()
