"""Maildir++ and the index: durable writes, recovery after a crash, UIDVALIDITY rules,
and the change feed other sessions listen to."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mxlab.nodes.store.maildir import BadFolderName, Maildir, check_folder_name
from mxlab.nodes.store.mailstore import INDEX_FILE, Change, UserMail


def test_deliver_leaves_nothing_in_tmp_and_keeps_bytes(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path)
    maildir.create_folder("INBOX")
    data = b"Subject: x\r\n\r\nbody\r\n"
    path = maildir.deliver("INBOX", data)
    assert path.startswith("new/") and path.endswith(f",S={len(data) - 3},W={len(data)}")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert maildir.read("INBOX", path) == data


def test_files_hold_lf_and_are_served_with_crlf_at_their_exact_size(tmp_path: Path) -> None:
    """Other Maildir readers (mutt, Dovecot) expect LF on disk; IMAP and POP3 speak
    CRLF, and RFC822.SIZE must be the size of what FETCH BODY[] sends."""
    user = UserMail(tmp_path)
    data = b"Subject: lf\r\nTo: a@alpha.test\r\n\r\nline\r\nline two\r\n"
    uid = user.append("INBOX", data, frozenset(), None)
    (info,) = user.messages("INBOX")
    assert info.uid == uid and info.size == len(data)
    on_disk = (tmp_path / info.path).read_bytes()
    assert on_disk == data.replace(b"\r\n", b"\n") and b"\r" not in on_disk
    assert user.read("INBOX", info.path) == data
    # a bare LF from a careless client is served as CRLF and counted so
    bare = user.append("INBOX", b"Subject: bare\n\nbody\n", frozenset(), None)
    row = next(m for m in user.messages("INBOX") if m.uid == bare)
    assert user.read("INBOX", row.path) == b"Subject: bare\r\n\r\nbody\r\n"
    assert row.size == len(b"Subject: bare\r\n\r\nbody\r\n")


def test_files_written_with_crlf_by_older_versions_read_the_same(tmp_path: Path) -> None:
    user = UserMail(tmp_path)
    old = b"Subject: old\r\n\r\nkept\r\n"
    (tmp_path / "new" / "1.M1P1Q1.old,S=24").write_bytes(old)  # no row yet: recovered
    user.close()
    again = UserMail(tmp_path)
    (info,) = again.messages("INBOX")
    assert again.read("INBOX", info.path) == old and info.size == len(old)


def test_folders_are_maildirplus_dot_directories(tmp_path: Path) -> None:
    user = UserMail(tmp_path)
    user.create("Work.2026")
    assert (tmp_path / ".Work.2026" / "cur").is_dir()
    assert (tmp_path / ".Work.2026" / "maildirfolder").exists()
    for special in ("Sent", "Drafts", "Trash", "Junk"):
        assert user.mailbox(special) is not None
        assert (tmp_path / f".{special}" / "new").is_dir()
    assert user.mailbox("Sent").special_use == "\\Sent"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", ".hidden", "trailing."])
def test_bad_folder_names(name: str) -> None:
    with pytest.raises(BadFolderName):
        check_folder_name(name)


def test_index_recovers_files_it_never_saw_and_drops_vanished_ones(tmp_path: Path) -> None:
    user = UserMail(tmp_path)
    kept = user.append("INBOX", b"Subject: a\r\n\r\n1\r\n", frozenset({"\\Seen"}), None)
    gone = user.append("INBOX", b"Subject: b\r\n\r\n2\r\n", frozenset(), None)
    validity = user.mailbox("INBOX").uidvalidity  # type: ignore[union-attr]
    # a crash between rename and indexing: the file is there, the row is not
    orphan = user.maildir.deliver("INBOX", b"Subject: c\r\n\r\n3\r\n")
    vanished = next(m for m in user.messages("INBOX") if m.uid == gone)
    (tmp_path / vanished.path).unlink()
    user.close()
    again = UserMail(tmp_path)
    rows = again.messages("INBOX")
    assert [m.uid for m in rows] == [kept, gone + 1]
    assert rows[0].flags == frozenset({"\\Seen"})
    assert rows[1].path == orphan
    assert again.mailbox("INBOX").uidvalidity == validity  # type: ignore[union-attr]
    assert (tmp_path / INDEX_FILE).exists()


def test_recreated_mailbox_gets_a_new_uidvalidity(tmp_path: Path) -> None:
    user = UserMail(tmp_path)
    user.create("Box")
    first = user.mailbox("Box").uidvalidity  # type: ignore[union-attr]
    user.delete("Box")
    user.create("Box")
    assert user.mailbox("Box").uidvalidity > first  # type: ignore[union-attr]


def test_rename_keeps_uids_and_files(tmp_path: Path) -> None:
    user = UserMail(tmp_path)
    user.create("Old")
    uid = user.append("Old", b"Subject: r\r\n\r\n", frozenset(), None)
    user.rename("Old", "New")
    assert user.mailbox("Old") is None
    (info,) = user.messages("New")
    assert info.uid == uid and user.read("New", info.path) == b"Subject: r\r\n\r\n"


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def mailbox_changed(self, change: Change) -> None:
        self.changes.append(change)


def test_change_feed_reports_append_flags_and_expunge(tmp_path: Path) -> None:
    user = UserMail(tmp_path)
    watcher = Recorder()
    user.watch("INBOX", watcher)
    uid = user.append("INBOX", b"x\r\n", frozenset(), None)
    user.set_flags("INBOX", {uid: frozenset({"\\Deleted"})}, origin="me")
    user.expunge("INBOX", user.messages("INBOX"))
    kinds = [(c.kind, c.uids) for c in watcher.changes]
    assert kinds == [("exists", (uid,)), ("flags", (uid,)), ("expunge", (uid,))]
    assert watcher.changes[1].origin == "me"
    assert user.messages("INBOX") == [] and user.maildir.files("INBOX") == []
    user.unwatch("INBOX", watcher)
    user.append("INBOX", b"y\r\n", frozenset(), None)
    assert len(watcher.changes) == 3


def test_an_index_from_before_condstore_is_upgraded_in_place(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / INDEX_FILE)
    db.executescript(
        "CREATE TABLE mailbox (name TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL,"
        " uidnext INTEGER NOT NULL, recent_uid INTEGER NOT NULL DEFAULT 0, special_use TEXT);"
        "CREATE TABLE message (mailbox TEXT NOT NULL, uid INTEGER NOT NULL, path TEXT NOT NULL,"
        " size INTEGER NOT NULL, internaldate REAL NOT NULL, flags TEXT NOT NULL DEFAULT '',"
        " PRIMARY KEY (mailbox, uid)) WITHOUT ROWID;"
        "INSERT INTO mailbox VALUES ('INBOX', 1234, 2, 0, NULL);"
    )
    db.commit()
    db.close()
    user = UserMail(tmp_path)
    info = user.mailbox("INBOX")
    assert info is not None and info.uidvalidity == 1234 and info.highestmodseq == 1
    uid = user.append("INBOX", b"Subject: up\r\n\r\n", frozenset(), None)
    assert uid == 2
    modseq = user.set_flags("INBOX", {uid: frozenset({"\\Seen"})})
    assert user.messages("INBOX")[0].modseq == modseq > 2
