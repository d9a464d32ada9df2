"""The per-user index (SQLite): mailboxes with UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, and
per message its UID, file, size, internal date, flags and mod-sequence, plus a cache
of the rendered ENVELOPE/BODY/BODYSTRUCTURE — so SELECT and FETCH read rows, not
every file, and UIDs survive restarts (RFC 3501 §2.3.1.1, RFC 7162 §3.1)."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mailbox (
    name TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    recent_uid INTEGER NOT NULL DEFAULT 0,
    special_use TEXT,
    highestmodseq INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS subscription (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS message (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    internaldate REAL NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expunged (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    item TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (mailbox, uid, item)
) WITHOUT ROWID;
"""
# columns added after the first release: (table, column, definition)
_ADDED = [
    ("mailbox", "highestmodseq", "INTEGER NOT NULL DEFAULT 1"),
    ("message", "modseq", "INTEGER NOT NULL DEFAULT 1"),
]
_MAILBOX_COLUMNS = "name, uidvalidity, uidnext, recent_uid, special_use, highestmodseq"


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    uidvalidity: int
    uidnext: int
    recent_uid: int  # UIDs above this are \\Recent for the next session that selects
    special_use: str | None
    highestmodseq: int  # RFC 7162 §3.1.1


@dataclass(slots=True)
class MessageInfo:
    uid: int
    path: str  # relative to the folder directory
    size: int  # octets of the stored (CRLF) form, RFC822.SIZE
    internaldate: float
    flags: frozenset[str]
    modseq: int = 1  # RFC 7162 §3.1: raised by every flag change


@dataclass(slots=True)
class FlagUpdate:
    """What one STORE did: the rows it changed, their new mod-sequence, the rows an
    UNCHANGEDSINCE kept it from changing, and every touched row's flags as stored."""

    changed: dict[int, frozenset[str]] = field(default_factory=dict)
    modseq: int = 0
    failed: list[int] = field(default_factory=list)
    current: dict[int, tuple[frozenset[str], int]] = field(default_factory=dict)


def _flags_text(flags: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(flags))


@functools.lru_cache(maxsize=1024)
def _flag_set(text: str) -> frozenset[str]:
    """A mailbox holds few distinct flag sets: SELECT of 10,000 rows builds a handful."""
    return frozenset(text.split())


class Index:
    """Rows for one user. Used from one thread (the event loop) only."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        # WAL + NORMAL: a killed process loses no committed row; the maildir files
        # are the ground truth and ``recover`` re-adds any file the index missed.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        for table, column, definition in _ADDED:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    # -- mailboxes -------------------------------------------------------------------

    def _new_uidvalidity(self) -> int:
        """Strictly increasing, so a re-created mailbox never reuses one (§2.3.1.1)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone()
        value = max(int(time.time()), (row[0] if row else 0) + 1)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (value,))
        return value

    def mailbox(self, name: str) -> MailboxInfo | None:
        row = self.db.execute(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailbox WHERE name=?", (name,)
        ).fetchone()
        return MailboxInfo(*row) if row else None

    def mailboxes(self) -> list[MailboxInfo]:
        rows = self.db.execute(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailbox ORDER BY name != 'INBOX', name"
        ).fetchall()
        return [MailboxInfo(*r) for r in rows]

    def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO mailbox (name, uidvalidity, uidnext, special_use) VALUES (?,?,1,?)",
            (name, self._new_uidvalidity(), special_use),
        )
        self.db.commit()

    def delete_mailbox(self, name: str) -> None:
        self.db.execute("DELETE FROM cache WHERE mailbox=?", (name,))
        self.db.execute("DELETE FROM expunged WHERE mailbox=?", (name,))
        self.db.execute("DELETE FROM message WHERE mailbox=?", (name,))
        self.db.execute("DELETE FROM mailbox WHERE name=?", (name,))
        self.db.commit()

    def rename_mailbox(self, old: str, new: str) -> None:
        """RFC 3501 §6.3.5: UIDVALIDITY may stay, since UIDs move with the mailbox."""
        self.db.execute("UPDATE mailbox SET name=? WHERE name=?", (new, old))
        self.db.execute("UPDATE message SET mailbox=? WHERE mailbox=?", (new, old))
        self.db.execute("UPDATE cache SET mailbox=? WHERE mailbox=?", (new, old))
        self.db.execute("UPDATE expunged SET mailbox=? WHERE mailbox=?", (new, old))
        self.db.commit()

    def claim_recent(self, name: str, uid: int) -> int:
        """RFC 3501 §2.3.2: \\Recent goes to exactly one session. Raise the mark to
        ``uid`` and return where it was: this session alone owns the UIDs between."""
        with self._transaction():
            row = self.db.execute("SELECT recent_uid FROM mailbox WHERE name=?", (name,))
            (before,) = row.fetchone() or (uid,)
            if uid > before:
                self.db.execute("UPDATE mailbox SET recent_uid=? WHERE name=?", (uid, name))
        return int(before)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: a read-modify-write nobody can interleave with."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()

    def subscriptions(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM subscription")}

    def subscribe(self, name: str, on: bool) -> None:
        if on:
            self.db.execute("INSERT OR IGNORE INTO subscription VALUES (?)", (name,))
        else:
            self.db.execute("DELETE FROM subscription WHERE name=?", (name,))
        self.db.commit()

    # -- messages --------------------------------------------------------------------

    def add_messages(
        self, mailbox: str, items: list[tuple[str, int, float, frozenset[str]]]
    ) -> list[int]:
        """Index new files (path, size, internaldate, flags); return their new UIDs,
        allocated from UIDNEXT in one transaction, all with one new mod-sequence."""
        (uidnext,) = self.db.execute(
            "SELECT uidnext FROM mailbox WHERE name=?", (mailbox,)
        ).fetchone()
        modseq = self._next_modseq(mailbox)
        uids = list(range(uidnext, uidnext + len(items)))
        self.db.executemany(
            "INSERT INTO message (mailbox, uid, path, size, internaldate, flags, modseq)"
            " VALUES (?,?,?,?,?,?,?)",
            [
                (mailbox, uid, path, size, date, _flags_text(flags), modseq)
                for uid, (path, size, date, flags) in zip(uids, items, strict=True)
            ],
        )
        self.db.execute(
            "UPDATE mailbox SET uidnext=? WHERE name=?", (uidnext + len(items), mailbox)
        )
        self.db.commit()
        return uids

    def _next_modseq(self, mailbox: str) -> int:
        """RFC 7162 §3.1: a new, higher mod-sequence for the change being made (the
        caller commits)."""
        (modseq,) = self.db.execute(
            "UPDATE mailbox SET highestmodseq=highestmodseq+1 WHERE name=? RETURNING highestmodseq",
            (mailbox,),
        ).fetchone()
        return int(modseq)

    def messages(self, mailbox: str, after_uid: int = 0) -> list[MessageInfo]:
        """The messages in UID order; ``after_uid`` fetches only the newer ones, which
        is all a session needs when told of new mail."""
        rows = self.db.execute(
            "SELECT uid, path, size, internaldate, flags, modseq FROM message"
            " WHERE mailbox=? AND uid>? ORDER BY uid",
            (mailbox, after_uid),
        )
        return [
            MessageInfo(uid, path, size, date, _flag_set(flags), modseq)
            for uid, path, size, date, flags, modseq in rows
        ]

    def set_flags(self, mailbox: str, changes: list[tuple[int, frozenset[str]]]) -> int:
        """Store new flags; return the one mod-sequence they all got."""
        modseq = self._next_modseq(mailbox)
        self.db.executemany(
            "UPDATE message SET flags=?, modseq=? WHERE mailbox=? AND uid=?",
            [(_flags_text(flags), modseq, mailbox, uid) for uid, flags in changes],
        )
        self.db.commit()
        return modseq

    def _rows(self, mailbox: str, uids: list[int]) -> list[tuple[int, str, int]]:
        """(uid, flags, modseq) of the given ascending UIDs that still exist."""
        if not uids:
            return []
        wanted = set(uids)
        rows = self.db.execute(
            "SELECT uid, flags, modseq FROM message WHERE mailbox=? AND uid BETWEEN ? AND ?",
            (mailbox, uids[0], uids[-1]),
        )
        return [r for r in rows if r[0] in wanted]

    def update_flags(
        self,
        mailbox: str,
        uids: list[int],
        change: Callable[[frozenset[str]], frozenset[str]],
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        """STORE as one read-modify-write of the rows (RFC 3501 §6.4.6): the new flags
        are computed from what the index holds now, not from a session's copy, so a
        change another session made in between is kept, not overwritten. With
        ``unchanged_since`` (RFC 7162 §3.1.3) a row changed after it is left alone."""
        result = FlagUpdate()
        with self._transaction():
            writes = []
            for uid, text, modseq in self._rows(mailbox, uids):
                flags = _flag_set(text)
                if unchanged_since is not None and modseq > unchanged_since:
                    result.failed.append(uid)
                    result.current[uid] = (flags, modseq)
                    continue
                new = change(flags)
                if new != flags:
                    writes.append((uid, new))
                result.current[uid] = (new, modseq)
            if writes:
                result.modseq = self._next_modseq(mailbox)
                self.db.executemany(
                    "UPDATE message SET flags=?, modseq=? WHERE mailbox=? AND uid=?",
                    [(_flags_text(f), result.modseq, mailbox, uid) for uid, f in writes],
                )
                for uid, new in writes:
                    result.changed[uid] = new
                    result.current[uid] = (new, result.modseq)
        return result

    def current_flags(self, mailbox: str, uids: list[int]) -> dict[int, tuple[frozenset[str], int]]:
        """uid -> (flags, modseq) as stored now, for the ascending ``uids`` that exist."""
        return {uid: (_flag_set(text), ms) for uid, text, ms in self._rows(mailbox, uids)}

    def expunge_deleted(self, mailbox: str, uids: list[int] | None = None) -> list[MessageInfo]:
        """RFC 3501 §6.4.3: remove what is \\Deleted in the index at this moment (of
        ``uids`` only, for UID EXPUNGE), in one transaction; return the removed rows."""
        with self._transaction():
            rows = self.db.execute(
                "SELECT uid, path, size, internaldate, flags, modseq FROM message"
                " WHERE mailbox=? AND instr(' ' || flags || ' ', ' \\Deleted ') > 0"
                " ORDER BY uid",
                (mailbox,),
            ).fetchall()
            wanted = None if uids is None else set(uids)
            gone = [
                MessageInfo(uid, path, size, date, _flag_set(flags), modseq)
                for uid, path, size, date, flags, modseq in rows
                if wanted is None or uid in wanted
            ]
            if gone:
                self._delete_rows(mailbox, [m.uid for m in gone])
        return gone

    def _delete_rows(self, mailbox: str, uids: list[int]) -> None:
        keys = [(mailbox, u) for u in uids]
        self.db.executemany("DELETE FROM message WHERE mailbox=? AND uid=?", keys)
        self.db.executemany("DELETE FROM cache WHERE mailbox=? AND uid=?", keys)
        modseq = self._next_modseq(mailbox)
        # RFC 7162 §3.2.5.2: remembered, so QRESYNC can report them as VANISHED
        self.db.executemany(
            "INSERT OR REPLACE INTO expunged VALUES (?,?,?)", [(*k, modseq) for k in keys]
        )

    def remove_messages(self, mailbox: str, uids: list[int]) -> None:
        """Expunge rows; HIGHESTMODSEQ rises too, so a client comparing it notices."""
        self._delete_rows(mailbox, uids)
        self.db.commit()

    def vanished_since(self, mailbox: str, modseq: int) -> list[int]:
        """UIDs expunged after ``modseq`` (RFC 7162 §3.2.5.2, §3.2.6), ascending."""
        rows = self.db.execute(
            "SELECT uid FROM expunged WHERE mailbox=? AND modseq>? ORDER BY uid", (mailbox, modseq)
        )
        return [uid for (uid,) in rows]

    def counts(self, mailbox: str, recent_uid: int) -> tuple[int, int, int]:
        """(messages, unseen, recent) for STATUS without loading every row."""
        total, unseen, recent = self.db.execute(
            "SELECT count(*), coalesce(sum(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0),"
            " coalesce(sum(uid > ?), 0) FROM message WHERE mailbox=?",
            (recent_uid, mailbox),
        ).fetchone()
        return total, unseen, recent

    # -- FETCH cache -----------------------------------------------------------------

    def cached(self, mailbox: str, lo: int, hi: int) -> dict[tuple[int, str], bytes]:
        """Rendered ENVELOPE/BODY/BODYSTRUCTURE of UIDs lo..hi, keyed (uid, item):
        one range query, so FETCH 1:* ALL reads no message file (the issue's
        "cached envelope data")."""
        rows = self.db.execute(
            "SELECT uid, item, value FROM cache WHERE mailbox=? AND uid BETWEEN ? AND ?",
            (mailbox, lo, hi),
        )
        return {(uid, item): value for uid, item, value in rows}

    def put_cached(self, mailbox: str, values: dict[tuple[int, str], bytes]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO cache VALUES (?,?,?,?)",
            [(mailbox, uid, item, value) for (uid, item), value in values.items()],
        )
        self.db.commit()
