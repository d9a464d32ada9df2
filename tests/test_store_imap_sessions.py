"""Several IMAP sessions sharing one mailbox, as a phone, a laptop and a webmail do:
flag changes are read-modify-write against the index, EXPUNGE acts on what is
\\Deleted there, \\Recent goes to exactly one session, and every session is told of
every change at the moment RFC 3501 §7.4.1 allows. Sans-IO: no sockets."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.imap_session import ImapSession
from mxlab.nodes.store.mailstore import MailStore
from tests.test_store_imap import session, tagged
from tests.test_store_support import (
    auth_fixture,  # noqa: F401 (the "auth" fixture)
    message,
    store_config,
    store_fixture,  # noqa: F401 (the "store" fixture)
)

ALICE = "alice@alpha.test"


def deliver(store: MailStore, subject: str = "m") -> int:
    return store.user(ALICE).append("INBOX", message(subject), frozenset(), None)


def selected(store: MailStore, auth: Authenticator, n: int) -> list[ImapSession]:
    sessions = [session(store, auth) for _ in range(n)]
    for s in sessions:
        assert tagged(s.receive(b"s SELECT INBOX\r\n"), "s").startswith("s OK")
    return sessions


def stored_flags(store: MailStore) -> dict[int, frozenset[str]]:
    return {m.uid: m.flags for m in store.user(ALICE).messages("INBOX")}


def untagged_counts(out: bytes, word: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^\* (\d+) " + word + rb"\r$", out, re.M)]


def replay(out: bytes, exists: int) -> int:
    """Follow EXISTS/EXPUNGE as a client does; every RECENT must be <= EXISTS at the
    moment it is sent (§7.3.2). Returns the message count at the end."""
    for n, kind in re.findall(rb"^\* (\d+) (EXISTS|RECENT|EXPUNGE)\r$", out, re.M):
        if kind == b"EXISTS":
            exists = int(n)
        elif kind == b"EXPUNGE":
            assert 1 <= int(n) <= exists
            exists -= 1
        else:
            assert int(n) <= exists, out
    return exists


# -- defect 1: lost updates, an un-deleted message expunged -------------------------------


def test_expunge_keeps_a_message_another_session_undeleted(
    store: MailStore, auth: Authenticator
) -> None:
    deliver(store)
    a, b = selected(store, auth, 2)
    a.receive(b"1 STORE 1 +FLAGS (\\Deleted)\r\n")
    b.receive(b"2 STORE 1 -FLAGS (\\Deleted)\r\n")
    out = a.receive(b"3 EXPUNGE\r\n")
    assert tagged(out, "3") == "3 OK EXPUNGE completed"
    assert b"EXPUNGE\r\n" not in out.replace(b"3 OK EXPUNGE", b"")
    assert len(store.user(ALICE).messages("INBOX")) == 1  # Dovecot keeps it too


def test_expunge_removes_what_another_session_deleted_and_everyone_hears(
    store: MailStore, auth: Authenticator
) -> None:
    """§6.4.3 + §7.4.1 (defect 8): A expunges a message B marked \\Deleted that A's
    copy did not show yet; A and the bystander C both get the EXPUNGE response, C
    not during its FETCH but at its next command that allows it."""
    deliver(store, "one")
    deliver(store, "two")
    a, b, c = selected(store, auth, 3)
    b.receive(b"1 STORE 2 +FLAGS (\\Deleted)\r\n")
    out = a.receive(b"2 EXPUNGE\r\n")
    assert b"* 2 EXPUNGE\r\n" in out and tagged(out, "2").startswith("2 OK")
    assert [m.uid for m in store.user(ALICE).messages("INBOX")] == [1]
    assert b"EXPUNGE" not in c.receive(b"3 FETCH 1:* FLAGS\r\n")
    assert b"EXPUNGE" not in c.receive(b"4 STORE 1 +FLAGS (\\Seen)\r\n")
    assert b"* 2 EXPUNGE\r\n" in c.receive(b"5 UID FETCH 1 FLAGS\r\n")
    assert untagged_counts(b.receive(b"6 NOOP\r\n"), b"EXPUNGE") == [2]


def test_concurrent_stores_on_one_message_both_take_effect(
    store: MailStore, auth: Authenticator
) -> None:
    uid = deliver(store)
    a, b = selected(store, auth, 2)
    a.receive(b"1 STORE 1 +FLAGS (\\Seen)\r\n")
    b.receive(b"2 STORE 1 +FLAGS (\\Flagged)\r\n")  # b's copy predates a's \Seen
    assert stored_flags(store)[uid] == {"\\Seen", "\\Flagged"}
    b.receive(b"3 STORE 1 -FLAGS (\\Seen)\r\n")
    a.receive(b"4 STORE 1 +FLAGS (\\Answered)\r\n")
    assert stored_flags(store)[uid] == {"\\Flagged", "\\Answered"}


def test_fetch_shows_a_flag_another_session_stored(store: MailStore, auth: Authenticator) -> None:
    deliver(store)
    a, b = selected(store, auth, 2)
    b.receive(b"1 STORE 1 +FLAGS (\\Answered)\r\n")
    out = a.receive(b"2 FETCH 1 FLAGS\r\n")
    lines = [ln for ln in out.split(b"\r\n") if ln.startswith(b"* 1 FETCH")]
    assert lines and all(b"\\Answered" in ln for ln in lines), out


# -- defect 2: \Recent in exactly one session, RECENT <= EXISTS -----------------------------


def test_new_mail_is_recent_in_exactly_one_session(store: MailStore, auth: Authenticator) -> None:
    a, b, c = selected(store, auth, 3)
    deliver(store)
    outs = [s.receive(b"n NOOP\r\n") for s in (a, b, c)]
    assert [untagged_counts(o, b"EXISTS") for o in outs] == [[1], [1], [1]]
    recent = [untagged_counts(o, b"RECENT")[0] for o in outs]
    assert sorted(recent) == [0, 0, 1]
    flags = [s.receive(b"f FETCH 1 FLAGS\r\n").count(b"\\Recent") for s in (a, b, c)]
    assert flags == recent
    assert b"* 0 RECENT" in session(store, auth).receive(b"s SELECT INBOX\r\n")


def test_recent_never_exceeds_exists_after_another_session_expunges(
    store: MailStore, auth: Authenticator
) -> None:
    deliver(store)
    a = selected(store, auth, 1)[0]  # a holds \Recent for message 1
    (b,) = selected(store, auth, 1)
    b.receive(b"1 STORE 1 +FLAGS (\\Deleted)\r\n2 EXPUNGE\r\n")
    deliver(store)
    out = a.receive(b"3 NOOP\r\n")
    assert replay(out, 1) == 1
    out = a.receive(b"4 SEARCH RECENT\r\n")
    assert b"* SEARCH 1\r\n" in out  # the new one; the expunged one took its \Recent along
    b.receive(b"5 NOOP\r\n")  # b is told of the new mail but it is a's to call recent
    assert b"* SEARCH\r\n" in b.receive(b"6 SEARCH RECENT\r\n")


def test_examine_does_not_take_recent_from_the_next_select(
    store: MailStore, auth: Authenticator
) -> None:
    deliver(store)
    e = session(store, auth)
    assert b"* 1 RECENT" in e.receive(b"e EXAMINE INBOX\r\n")  # §6.3.2: no state change
    assert b"* 1 RECENT" in session(store, auth).receive(b"s SELECT INBOX\r\n")


# -- acceptance: two and three sessions, moves -------------------------------------------------


def test_move_by_one_session_is_an_expunge_for_the_others(
    store: MailStore, auth: Authenticator
) -> None:
    deliver(store, "one")
    deliver(store, "two")
    a, b, c = selected(store, auth, 3)
    b.receive(b"0 STORE 1 +FLAGS (\\Flagged)\r\n")
    out = a.receive(b"1 MOVE 1 Trash\r\n")
    assert b"* 1 EXPUNGE" in out and "[COPYUID" in out.decode()
    (moved,) = store.user(ALICE).messages("Trash")
    assert moved.flags == {"\\Flagged"}  # b's flag travelled with it
    assert untagged_counts(b.receive(b"2 NOOP\r\n"), b"EXPUNGE") == [1]
    # c fetches by sequence number first: the message stays visible until it may be told
    out = c.receive(b"3 FETCH 2 (UID)\r\n")
    assert b"* 2 FETCH (UID 2)" in out and b"EXPUNGE" not in out
    out = c.receive(b"4 NOOP\r\n")
    assert untagged_counts(out, b"EXPUNGE") == [1]
    assert b"* 1 FETCH (UID 2)" in c.receive(b"5 FETCH 1 (UID)\r\n")


def test_copy_of_a_message_expunged_elsewhere_is_refused_whole(
    store: MailStore, auth: Authenticator
) -> None:
    deliver(store, "one")
    a, b = selected(store, auth, 2)
    b.receive(b"1 STORE 1 +FLAGS (\\Deleted)\r\n2 EXPUNGE\r\n")
    out = a.receive(b"3 COPY 1 Trash\r\n")  # a was not told yet: the copy cannot be made
    assert tagged(out, "3").startswith("3 NO [EXPUNGEISSUED]")
    assert store.user(ALICE).messages("Trash") == []
    assert b"* 1 EXPUNGE" in out


def test_store_on_a_message_expunged_elsewhere_changes_nothing(
    store: MailStore, auth: Authenticator
) -> None:
    deliver(store, "one")
    deliver(store, "two")
    a, b = selected(store, auth, 2)
    b.receive(b"1 STORE 1 +FLAGS (\\Deleted)\r\n2 EXPUNGE\r\n")
    out = a.receive(b"3 STORE 1:2 +FLAGS (\\Seen)\r\n")
    assert b"EXPUNGE" not in out and b"* 2 FETCH (FLAGS (\\Recent \\Seen))" in out
    assert tagged(out, "3").startswith("3 OK")
    assert stored_flags(store) == {2: frozenset({"\\Seen"})}


def test_conditional_store_compares_with_the_index_not_a_stale_copy(
    store: MailStore, auth: Authenticator
) -> None:
    """RFC 7162 §3.1.3: UNCHANGEDSINCE fails for a message another session changed
    after the mod-sequence the client knew."""
    deliver(store)
    a, b = selected(store, auth, 2)
    out = a.receive(b"1 FETCH 1 (MODSEQ)\r\n")
    (known,) = re.findall(rb"MODSEQ \((\d+)\)", out)
    b.receive(b"2 STORE 1 +FLAGS (\\Flagged)\r\n")
    out = a.receive(b"3 STORE 1 (UNCHANGEDSINCE %s) +FLAGS (\\Seen)\r\n" % known)
    assert tagged(out, "3").startswith("3 OK [MODIFIED 1]")
    assert stored_flags(store)[1] == {"\\Flagged"}


# -- a state machine: several sessions against a model mailbox ---------------------------

_FLAGS = ["\\Seen", "\\Deleted", "\\Flagged", "$Work"]
_FETCHED = re.compile(rb"^\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)\r$", re.M)


class SharedMailbox(RuleBasedStateMachine):
    """Three sessions, deliveries, STOREs, EXPUNGEs and MOVEs in any interleaving; the
    model says what the mailbox must hold. After each step the index agrees with the
    model; at a NOOP each session's view (counted from its EXISTS/EXPUNGE responses)
    agrees too, and no message is \\Recent in two sessions."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="mxlab-imap-sm-"))
        self.store = MailStore(self.tmp / "mail")
        auth = Authenticator(store_config(self.tmp))
        self.sessions = selected(self.store, auth, 3)
        self.counts = [0, 0, 0]  # what each client believes EXISTS is
        self.model: dict[int, set[str]] = {}
        self.trash = 0

    def teardown(self) -> None:
        for s in self.sessions:
            s.close()
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _send(self, i: int, command: bytes) -> bytes:
        out = self.sessions[i].receive(command + b"\r\n")
        self.counts[i] = replay(out, self.counts[i])
        assert re.search(rb"^t (OK|NO)", out, re.M), out
        return out

    @rule()
    def deliver(self) -> None:
        self.model[deliver(self.store)] = set()

    @rule(
        i=st.integers(0, 2),
        k=st.integers(0, 20),
        mode=st.sampled_from(["+", "-", ""]),
        flag=st.sampled_from(_FLAGS),
    )
    def store_flag(self, i: int, k: int, mode: str, flag: str) -> None:
        if not self.model:
            return
        uid = sorted(self.model)[k % len(self.model)]
        self._send(i, f"t UID STORE {uid} {mode}FLAGS.SILENT ({flag})".encode())
        current = self.model[uid]
        self.model[uid] = current | {flag} if mode == "+" else current - {flag} if mode else {flag}

    @rule(i=st.integers(0, 2))
    def expunge(self, i: int) -> None:
        self._send(i, b"t EXPUNGE")
        self.model = {u: f for u, f in self.model.items() if "\\Deleted" not in f}

    @rule(i=st.integers(0, 2), k=st.integers(0, 20))
    def move(self, i: int, k: int) -> None:
        if not self.model:
            return
        uid = sorted(self.model)[k % len(self.model)]
        self._send(i, f"t UID MOVE {uid} Trash".encode())
        del self.model[uid]
        self.trash += 1

    @rule(i=st.integers(0, 2))
    def fetch_by_number(self, i: int) -> None:
        """A FETCH may be answered while expunges wait: never with EXPUNGE (§7.4.1)."""
        if self.counts[i]:
            assert b"EXPUNGE" not in self._send(i, b"t FETCH 1:* (FLAGS)")

    @rule()
    def noop_all(self) -> None:
        recent: dict[int, int] = {}
        for i in range(3):
            self._send(i, b"t NOOP")
            out = self._send(i, b"t FETCH 1:* (UID FLAGS)") if self.counts[i] else b""
            rows = [(int(n), int(u), set(f.decode().split())) for n, u, f in _FETCHED.findall(out)]
            assert [n for n, _, _ in rows] == list(range(1, self.counts[i] + 1))
            assert [u for _, u, _ in rows] == sorted(self.model)
            for _, uid, flags in rows:
                assert flags - {"\\Recent"} == self.model[uid]
                if "\\Recent" in flags:
                    recent[uid] = recent.get(uid, 0) + 1
        assert all(n == 1 for n in recent.values()), recent

    @invariant()
    def index_matches_model(self) -> None:
        mail = self.store.user(ALICE)
        assert {m.uid: set(m.flags) for m in mail.messages("INBOX")} == self.model
        assert len(mail.messages("Trash")) == self.trash


TestSharedMailbox = SharedMailbox.TestCase
TestSharedMailbox.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
