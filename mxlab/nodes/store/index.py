"""The per-user index (SQLite): mailboxes with UIDVALIDITY/UIDNEXT, and per message
its UID, file, size, internal date and flags — so SELECT and FETCH read rows, not
every file, and UIDs survive restarts (RFC 3501 §2.3.1.1)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mailbox (
    name TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    recent_uid INTEGER NOT NULL DEFAULT 0,
    special_use TEXT
);
CREATE TABLE IF NOT EXISTS subscription (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS message (
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    internaldate REAL NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    uidvalidity: int
    uidnext: int
    recent_uid: int  # UIDs above this are \\Recent for the next session that selects
    special_use: str | None


@dataclass(slots=True)
class MessageInfo:
    uid: int
    path: str  # relative to the folder directory
    size: int  # octets of the stored (CRLF) form, RFC822.SIZE
    internaldate: float
    flags: frozenset[str]


def _flags_text(flags: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(flags))


class Index:
    """Rows for one user. Used from one thread (the event loop) only."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        # WAL + NORMAL: a killed process loses no committed row; the maildir files
        # are the ground truth and ``recover`` re-adds any file the index missed.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
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
            "SELECT name, uidvalidity, uidnext, recent_uid, special_use FROM mailbox WHERE name=?",
            (name,),
        ).fetchone()
        return MailboxInfo(*row) if row else None

    def mailboxes(self) -> list[MailboxInfo]:
        rows = self.db.execute(
            "SELECT name, uidvalidity, uidnext, recent_uid, special_use FROM mailbox"
            " ORDER BY name != 'INBOX', name"
        ).fetchall()
        return [MailboxInfo(*r) for r in rows]

    def create_mailbox(self, name: str, special_use: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO mailbox (name, uidvalidity, uidnext, special_use) VALUES (?,?,1,?)",
            (name, self._new_uidvalidity(), special_use),
        )
        self.db.commit()

    def delete_mailbox(self, name: str) -> None:
        self.db.execute("DELETE FROM message WHERE mailbox=?", (name,))
        self.db.execute("DELETE FROM mailbox WHERE name=?", (name,))
        self.db.commit()

    def rename_mailbox(self, old: str, new: str) -> None:
        """RFC 3501 §6.3.5: UIDVALIDITY may stay, since UIDs move with the mailbox."""
        self.db.execute("UPDATE mailbox SET name=? WHERE name=?", (new, old))
        self.db.execute("UPDATE message SET mailbox=? WHERE mailbox=?", (new, old))
        self.db.commit()

    def mark_recent_seen(self, name: str, uid: int) -> None:
        self.db.execute(
            "UPDATE mailbox SET recent_uid=max(recent_uid, ?) WHERE name=?", (uid, name)
        )
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
        allocated from UIDNEXT in one transaction."""
        (uidnext,) = self.db.execute(
            "SELECT uidnext FROM mailbox WHERE name=?", (mailbox,)
        ).fetchone()
        uids = list(range(uidnext, uidnext + len(items)))
        self.db.executemany(
            "INSERT INTO message VALUES (?,?,?,?,?,?)",
            [
                (mailbox, uid, path, size, date, _flags_text(flags))
                for uid, (path, size, date, flags) in zip(uids, items, strict=True)
            ],
        )
        self.db.execute(
            "UPDATE mailbox SET uidnext=? WHERE name=?", (uidnext + len(items), mailbox)
        )
        self.db.commit()
        return uids

    def messages(self, mailbox: str, after_uid: int = 0) -> list[MessageInfo]:
        """The messages in UID order; ``after_uid`` fetches only the newer ones, which
        is all a session needs when told of new mail."""
        rows = self.db.execute(
            "SELECT uid, path, size, internaldate, flags FROM message"
            " WHERE mailbox=? AND uid>? ORDER BY uid",
            (mailbox, after_uid),
        )
        return [
            MessageInfo(uid, path, size, date, frozenset(flags.split()))
            for uid, path, size, date, flags in rows
        ]

    def set_flags(self, mailbox: str, changes: list[tuple[int, frozenset[str]]]) -> None:
        self.db.executemany(
            "UPDATE message SET flags=? WHERE mailbox=? AND uid=?",
            [(_flags_text(flags), mailbox, uid) for uid, flags in changes],
        )
        self.db.commit()

    def remove_messages(self, mailbox: str, uids: list[int]) -> None:
        self.db.executemany(
            "DELETE FROM message WHERE mailbox=? AND uid=?", [(mailbox, u) for u in uids]
        )
        self.db.commit()

    def counts(self, mailbox: str, recent_uid: int) -> tuple[int, int, int]:
        """(messages, unseen, recent) for STATUS without loading every row."""
        total, unseen, recent = self.db.execute(
            "SELECT count(*), coalesce(sum(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0),"
            " coalesce(sum(uid > ?), 0) FROM message WHERE mailbox=?",
            (recent_uid, mailbox),
        ).fetchone()
        return total, unseen, recent
