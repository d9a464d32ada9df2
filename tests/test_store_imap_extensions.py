"""IMAP extensions, each against its RFC's own examples where the example can be
rebuilt: ESEARCH (RFC 4731), SEARCHRES (5182), WITHIN (5032), SORT and THREAD (5256),
LIST-EXTENDED and LIST-STATUS (5258, 5819), CREATE-SPECIAL-USE (6154), MULTIAPPEND
(3502), BINARY (3516), COMPRESS=DEFLATE (4978). Sans-IO: no sockets."""

from __future__ import annotations

import re
import time
import zlib

import pytest

from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.imap_session import ImapSession
from mxlab.nodes.store.mailstore import MailStore
from tests.test_store_imap import session, tagged
from tests.test_store_support import (
    auth_fixture,  # noqa: F401 (the "auth" fixture)
    store_fixture,  # noqa: F401 (the "store" fixture)
)

ALICE = "alice@alpha.test"


def untagged(out: bytes, word: str) -> list[str]:
    return [ln for ln in out.decode("utf-8", "replace").split("\r\n") if ln.startswith(f"* {word}")]


def add(
    store: MailStore,
    sender: str = "Jones <jones@beta.test>",
    subject: str = "s",
    flags: frozenset[str] = frozenset(),
    size: int = 0,
    date: float | None = None,
    headers: str = "",
) -> int:
    data = (
        f"From: {sender}\r\nTo: alice@alpha.test\r\nSubject: {subject}\r\n{headers}\r\n"
        + "x" * size
        + "\r\n"
    ).encode()
    return store.user(ALICE).append("INBOX", data, flags, date)


@pytest.fixture(name="rfc4731")
def rfc4731_fixture(store: MailStore, auth: Authenticator) -> ImapSession:
    """RFC 4731 §3.1's mailbox: of 11 messages, 2, 10 and 11 are \\Flagged and not
    from Smith; 5 is \\Flagged but from Smith."""
    for n in range(1, 12):
        flagged = n in (2, 5, 10, 11)
        add(
            store,
            "Smith <smith@beta.test>" if n == 5 else "Jones <jones@beta.test>",
            f"m{n}",
            frozenset({"\\Flagged"}) if flagged else frozenset(),
            size=5000 if n == 11 else 0,
        )
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    return s


# -- ESEARCH (RFC 4731) -------------------------------------------------------------------


def test_esearch_rfc4731_examples(rfc4731: ImapSession) -> None:
    criteria = b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
    out = rfc4731.receive(b"A282 SEARCH RETURN (MIN COUNT) " + criteria + b"\r\n")
    assert untagged(out, "ESEARCH") == ['* ESEARCH (TAG "A282") MIN 2 COUNT 3']
    assert tagged(out, "A282").startswith("A282 OK")
    out = rfc4731.receive(b"A283 SEARCH RETURN () " + criteria + b"\r\n")
    assert untagged(out, "ESEARCH") == ['* ESEARCH (TAG "A283") ALL 2,10:11']
    out = rfc4731.receive(b"A284 SEARCH RETURN (MIN) SUBJECT nothing-like-this\r\n")
    assert untagged(out, "ESEARCH") == ['* ESEARCH (TAG "A284")']
    out = rfc4731.receive(b"A285 UID SEARCH RETURN (MIN MAX) 1:5000\r\n")
    assert untagged(out, "ESEARCH") == ['* ESEARCH (TAG "A285") UID MIN 1 MAX 11']
    out = rfc4731.receive(b"A286 SEARCH RETURN (COUNT) SUBJECT nothing-like-this\r\n")
    assert untagged(out, "ESEARCH") == ['* ESEARCH (TAG "A286") COUNT 0']
    assert not untagged(out, "SEARCH ")  # no plain SEARCH response beside ESEARCH
    assert tagged(rfc4731.receive(b"b SEARCH RETURN (FROB) ALL\r\n"), "b").startswith("b BAD")


# -- SEARCHRES (RFC 5182) -----------------------------------------------------------------


def test_searchres_rfc5182_examples(rfc4731: ImapSession, store: MailStore) -> None:
    criteria = b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
    out = rfc4731.receive(b"A282 SEARCH RETURN (SAVE) " + criteria + b"\r\n")
    assert not untagged(out, "ESEARCH") and tagged(out, "A282").startswith("A282 OK")
    out = rfc4731.receive(b"A283 FETCH $ (UID FLAGS)\r\n")
    assert [ln.split()[1] for ln in untagged(out, "")] == ["2", "10", "11"]
    out = rfc4731.receive(b"A301 UID SEARCH UID $ SMALLER 4096\r\n")
    assert untagged(out, "SEARCH") == ["* SEARCH 2 10"]
    out = rfc4731.receive(b'A302 COPY $ "Trash"\r\n')
    assert tagged(out, "A302").startswith("A302 OK [COPYUID")
    assert len(store.user(ALICE).messages("Trash")) == 3
    # SAVE with MIN and MAX only keeps those two (§2.1)
    rfc4731.receive(b"A303 SEARCH RETURN (SAVE MIN MAX) " + criteria + b"\r\n")
    out = rfc4731.receive(b"A304 UID SEARCH $\r\n")
    assert untagged(out, "SEARCH") == ["* SEARCH 2 11"]
    # "$" follows expunges: UIDs, not sequence numbers, are saved
    rfc4731.receive(b"A305 STORE 1 +FLAGS (\\Deleted)\r\nA306 EXPUNGE\r\n")
    out = rfc4731.receive(b"A307 FETCH $ (UID)\r\n")
    assert [ln.split()[1] for ln in untagged(out, "")] == ["1", "10"]
    # a failed SAVE leaves "$" empty; a new SELECT too
    rfc4731.receive(b"A308 SEARCH RETURN (SAVE) FROB\r\n")
    assert untagged(rfc4731.receive(b"A309 SEARCH $\r\n"), "SEARCH") == ["* SEARCH"]


# -- WITHIN (RFC 5032) --------------------------------------------------------------------


def test_within_older_and_younger(store: MailStore, auth: Authenticator) -> None:
    now = time.time()
    add(store, subject="old", date=now - 3 * 86400)
    add(store, subject="new", date=now - 60)
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    assert untagged(s.receive(b"a SEARCH YOUNGER 3600\r\n"), "SEARCH") == ["* SEARCH 2"]
    assert untagged(s.receive(b"b SEARCH OLDER 86400\r\n"), "SEARCH") == ["* SEARCH 1"]
    assert tagged(s.receive(b"c SEARCH OLDER soon\r\n"), "c").startswith("c BAD")


# -- SORT and THREAD (RFC 5256) ------------------------------------------------------------


def dated(day: int) -> str:
    return f"Date: Mon, {day:02d} Jan 2024 12:00:00 +0000\r\n"


def test_sort_rfc5256_example(store: MailStore, auth: Authenticator) -> None:
    """§3's ``SORT (SUBJECT REVERSE DATE) UTF-8 ALL`` -> ``* SORT 5 3 4 1 2``, rebuilt
    with base subjects that need Re:, Fwd:, [blob] and (fwd) taken off."""
    add(store, subject="Re: C", headers=dated(5))
    add(store, subject="C", headers=dated(2))
    add(store, subject="[list] B", headers=dated(4))
    add(store, subject="Fwd: B (fwd)", headers=dated(3))
    add(store, subject="a", headers=dated(1))
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n")
    assert untagged(out, "SORT") == ["* SORT 5 3 4 1 2"]
    out = s.receive(b'A284 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"\r\n')
    assert untagged(out, "SORT") == ["* SORT"]
    assert untagged(s.receive(b"u UID SORT (REVERSE ARRIVAL) UTF-8 2:3\r\n"), "SORT") == [
        "* SORT 3 2"
    ]
    assert tagged(s.receive(b"b SORT (REVERSE) UTF-8 ALL\r\n"), "b").startswith("b BAD")
    out = s.receive(b"c SORT (DATE) KOI8-R ALL\r\n")
    assert tagged(out, "c").startswith("c NO [BADCHARSET")


@pytest.fixture(name="threads")
def threads_fixture(store: MailStore, auth: Authenticator) -> ImapSession:
    rows = [
        ("<a@x>", "", "topic"),
        ("<b@x>", "References: <a@x>\r\n", "Re: topic"),
        ("<c@x>", "References: <a@x> <b@x>\r\n", "Re: topic"),
        ("<d@x>", "In-Reply-To: <a@x>\r\n", "Re: topic"),
        ("<e@x>", "References: <gone@x>\r\n", "other"),
        ("<f@x>", "References: <gone@x>\r\n", "Re: other"),
        ("<g@x>", "", "lonely"),
        ("<h@x>", "", "Re: lonely"),
    ]
    for day, (mid, refs, subject) in enumerate(rows, 1):
        add(store, subject=subject, headers=f"Message-ID: {mid}\r\n{refs}{dated(day)}")
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    return s


def test_thread_references(threads: ImapSession) -> None:
    """§2.2: replies under their parents, a missing parent as a dummy root holding
    its children, and a root "Re: lonely" gathered under "lonely" by subject."""
    out = threads.receive(b"A285 THREAD REFERENCES US-ASCII ALL\r\n")
    assert untagged(out, "THREAD") == ["* THREAD (1 (2 3)(4))((5)(6))(7 8)"]
    out = threads.receive(b'A286 UID THREAD REFERENCES UTF-8 TEXT "gewp"\r\n')
    assert untagged(out, "THREAD") == ["* THREAD"]


def test_thread_orderedsubject(threads: ImapSession) -> None:
    out = threads.receive(b"A283 THREAD ORDEREDSUBJECT UTF-8 ALL\r\n")
    assert untagged(out, "THREAD") == ["* THREAD (1 (2)(3)(4))(5 6)(7 8)"]
    assert tagged(threads.receive(b"b THREAD FROB UTF-8 ALL\r\n"), "b").startswith("b BAD")


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Re: hello", "HELLO"),
        ("RE: [list] Fwd: hello (fwd)", "HELLO"),
        ("[fwd: Re: hello]", "HELLO"),
        ("  [blob] ", "[BLOB]"),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "GRÜSSE"),
    ],
)
def test_base_subject(subject: str, base: str) -> None:
    from mxlab.nodes.store.imap_sort import base_subject

    assert base_subject(subject)[0] == base


# -- LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154) ---------------


def listed(out: bytes) -> dict[str, tuple[set[str], str]]:
    """name -> (attributes, extended data) of each LIST line."""
    found = {}
    for line in untagged(out, "LIST"):
        attrs, rest = line[len("* LIST (") :].split(")", 1)
        name, _, extra = rest.strip()[4:].partition(" ")
        found[name.strip('"')] = (set(attrs.split()), extra)
    return found


@pytest.fixture(name="fruit")
def fruit_fixture(store: MailStore, auth: Authenticator) -> ImapSession:
    """RFC 5258 §5 example 5's mailboxes and subscriptions ("." for "/")."""
    s = session(store, auth)
    for box in ("Fruit", "Fruit.Apple", "Fruit.Banana", "Tofu", "Vegetable", "Vegetable.Broccoli"):
        s.receive(f"c CREATE {box}\r\n".encode())
    for name in ("INBOX", "Sent", "Drafts", "Trash", "Junk"):
        s.receive(f"u UNSUBSCRIBE {name}\r\n".encode())
    for name in ("Fruit.Banana", "Fruit.Peach", "Vegetable", "Vegetable.Broccoli"):
        s.receive(f"s SUBSCRIBE {name}\r\n".encode())
    return s


def test_list_extended_rfc5258_example(fruit: ImapSession) -> None:
    out = fruit.receive(b'A02 LIST (SUBSCRIBED) "" "*"\r\n')
    assert listed(out) == {
        "Fruit.Banana": ({"\\Subscribed", "\\HasNoChildren"}, ""),
        "Fruit.Peach": ({"\\Subscribed", "\\NonExistent"}, ""),
        "Vegetable": ({"\\Subscribed", "\\HasChildren"}, ""),
        "Vegetable.Broccoli": ({"\\Subscribed", "\\HasNoChildren"}, ""),
    }
    out = fruit.receive(b'A03 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)\r\n')
    assert listed(out) == {
        "Fruit": ({"\\HasChildren"}, '("CHILDINFO" ("SUBSCRIBED"))'),
        "Vegetable": ({"\\Subscribed", "\\HasChildren"}, '("CHILDINFO" ("SUBSCRIBED"))'),
    }
    out = fruit.receive(b'A04 LIST "" ("Tofu" "Fruit.*") RETURN (SUBSCRIBED)\r\n')
    assert set(listed(out)) == {"Tofu", "Fruit.Apple", "Fruit.Banana"}
    assert "\\Subscribed" in listed(out)["Fruit.Banana"][0]
    out = fruit.receive(b'A05 LIST (RECURSIVEMATCH) "" "%"\r\n')
    assert tagged(out, "A05").startswith("A05 BAD")  # §3.1: needs another option


def test_list_status_rfc5819_example(fruit: ImapSession, store: MailStore) -> None:
    add(store, flags=frozenset({"\\Seen"}))
    add(store)
    out = fruit.receive(b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))\r\n')
    lines = [ln for ln in out.decode().split("\r\n") if ln.startswith("* ")]
    at = lines.index('* LIST (\\HasNoChildren) "." "INBOX"')
    assert lines[at + 1] == '* STATUS "INBOX" (MESSAGES 2 UNSEEN 1)'
    assert '* STATUS "Tofu" (MESSAGES 0 UNSEEN 0)' in lines
    out = fruit.receive(b'A02 LIST "" % RETURN (STATUS (FROB))\r\n')
    assert tagged(out, "A02").startswith("A02 BAD") and not untagged(out, "LIST")


def test_special_use_list_and_create(store: MailStore, auth: Authenticator) -> None:
    """RFC 6154 §2 and §3 (CREATE-SPECIAL-USE)."""
    s = session(store, auth)
    out = s.receive(b'a LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)\r\n')
    assert {n: a for n, (a, _) in listed(out).items()} == {
        "Drafts": {"\\HasNoChildren", "\\Drafts"},
        "Junk": {"\\HasNoChildren", "\\Junk"},
        "Sent": {"\\HasNoChildren", "\\Sent"},
        "Trash": {"\\HasNoChildren", "\\Trash"},
    }
    out = s.receive(b'b CREATE "Important Messages" (USE (\\Flagged))\r\n')
    assert tagged(out, "b").startswith("b NO [USEATTR]")
    out = s.receive(b"c CREATE Archive (USE (\\Archive))\r\n")
    assert tagged(out, "c") == "c OK CREATE completed"
    assert "\\Archive" in listed(s.receive(b'd LIST "" Archive\r\n'))["Archive"][0]


# -- MULTIAPPEND (RFC 3502) -----------------------------------------------------------------

_M1 = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: afternoon meeting\r\n\r\nHello\r\n"
_M2 = b"Date: Mon, 7 Feb 1994 22:43:04 -0800\r\nSubject: re: afternoon\r\n\r\nOK\r\n"


def test_multiappend_rfc3502_example(store: MailStore, auth: Authenticator) -> None:
    s = session(store, auth)
    s.receive(b"a CREATE saved-messages\r\n")
    assert s.receive(b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(_M1)) == (
        b"+ Ready for literal data\r\n"
    )
    assert s.receive(_M1 + b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(_M2)) == (
        b"+ Ready for literal data\r\n"
    )
    out = s.receive(_M2 + b"\r\n")
    reply = tagged(out, "A003")
    assert reply.startswith("A003 OK [APPENDUID ") and reply.split()[4] == "1:2]"
    rows = store.user(ALICE).messages("saved-messages")
    assert [m.flags for m in rows] == [{"\\Seen"}, {"\\Seen"}]
    assert rows[1].internaldate == 760689784.0  # its own date: 1994-02-08 06:43:04 UTC


def test_multiappend_is_all_or_nothing(store: MailStore, auth: Authenticator) -> None:
    s = session(store, auth)
    out = s.receive(
        b"a APPEND INBOX {%d+}\r\n%s (\\Frob) {%d+}\r\n%s\r\n" % (len(_M1), _M1, len(_M2), _M2)
    )
    assert tagged(out, "a").startswith("a BAD")
    out = s.receive(b'b APPEND INBOX {%d+}\r\n%s "not a date" {2+}\r\nx\r\n\r\n' % (len(_M1), _M1))
    assert tagged(out, "b").startswith("b BAD")
    assert store.user(ALICE).messages("INBOX") == []
    assert store.user(ALICE).maildir.files("INBOX") == []


# -- BINARY (RFC 3516) ------------------------------------------------------------------------

_BINARY_MAIL = (
    b"Subject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 soft=\r\nbreak\r\n"
    b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAECAwQ=\r\n"
    b"--B\r\nContent-Type: application/x\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin\r\n"
    b"--B--\r\n"
)


def test_binary_fetch_decodes_parts(store: MailStore, auth: Authenticator) -> None:
    store.user(ALICE).append("INBOX", _BINARY_MAIL, frozenset(), None)
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n")
    assert b"BINARY.SIZE[1] 15" in out
    assert b"BINARY[1] {15}\r\ncaf\xc3\xa9 softbreak" in out  # QP soft break undone
    assert b"\\Seen" not in out
    out = s.receive(b"b FETCH 1 (BINARY[2] BINARY.SIZE[2])\r\n")
    assert b"BINARY[2] ~{5}\r\n\x00\x01\x02\x03\x04" in out  # NUL: literal8 (§4.2)
    assert b"BINARY.SIZE[2] 5" in out and b"\\Seen" in out  # not PEEK: \Seen (§6.4.5)
    out = s.receive(b"c FETCH 1 BINARY.PEEK[2]<1.2>\r\n")
    assert b"BINARY[2]<1> {2}\r\n\x01\x02" in out
    out = s.receive(b"d FETCH 1 BINARY.PEEK[3]\r\n")
    assert tagged(out, "d").startswith("d NO [UNKNOWN-CTE]")
    assert tagged(s.receive(b"e FETCH 1 BINARY[1.MIME]\r\n"), "e").startswith("e BAD")


def test_binary_append_takes_literal8(store: MailStore, auth: Authenticator) -> None:
    s = session(store, auth)
    data = b"Subject: nul\r\n\r\na\x00b\r\n"
    out = s.receive(b"a APPEND INBOX ~{%d+}\r\n" % len(data) + data + b"\r\n")
    assert tagged(out, "a").startswith("a OK [APPENDUID")
    (row,) = store.user(ALICE).messages("INBOX")
    assert store.user(ALICE).read("INBOX", row.path) == data


# -- COMPRESS=DEFLATE (RFC 4978) ------------------------------------------------------------


def test_compress_deflate_both_ways(store: MailStore, auth: Authenticator) -> None:
    add(store, subject="squeezed")
    s = session(store, auth)
    assert s.receive(b"a COMPRESS DEFLATE\r\n") == b"a OK DEFLATE active\r\n"  # plain (§3)
    to_server = zlib.compressobj(wbits=-15)
    from_server = zlib.decompressobj(wbits=-15)

    def send(line: bytes) -> bytes:
        data = to_server.compress(line) + to_server.flush(zlib.Z_SYNC_FLUSH)
        return from_server.decompress(s.receive(data))

    out = send(b"b SELECT INBOX\r\nc FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])\r\n")
    assert b"* 1 EXISTS\r\n" in out and b"Subject: squeezed\r\n" in out
    assert tagged(out, "c") == "c OK FETCH completed"
    out = send(b"d COMPRESS DEFLATE\r\n")
    assert tagged(out, "d").startswith("d NO [COMPRESSIONACTIVE]")
    # IDLE pushes go through the same stream
    assert send(b"i IDLE\r\n") == b"+ idling\r\n"
    add(store, subject="pushed")
    assert b"* 2 EXISTS\r\n" in from_server.decompress(s.updates())
    assert tagged(send(b"DONE\r\n"), "i") == "i OK IDLE terminated"
    assert b"* BYE" in from_server.decompress(s.timeout_bye())


def test_compress_refuses_other_mechanisms_and_corrupt_input(
    store: MailStore, auth: Authenticator
) -> None:
    s = session(store, auth)
    assert tagged(s.receive(b"a COMPRESS LZW\r\n"), "a").startswith("a BAD")
    s.receive(b"b COMPRESS DEFLATE\r\n")
    out = zlib.decompressobj(wbits=-15).decompress(s.receive(b"\xff\xff\xff\xff"))
    assert out.startswith(b"* BYE") and s.closed


# -- QRESYNC (RFC 7162 §3.2) ------------------------------------------------------------------


def test_qresync_select_fetch_vanished_and_expunge(store: MailStore, auth: Authenticator) -> None:
    for n in range(6):
        add(store, subject=f"m{n}")
    s = session(store, auth)
    out = s.receive(b"a SELECT INBOX\r\n")
    validity = re.search(rb"UIDVALIDITY (\d+)", out).group(1)  # type: ignore[union-attr]
    known = re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1)  # type: ignore[union-attr]
    s.receive(b"b LOGOUT\r\n")
    other = session(store, auth)
    other.receive(b"a SELECT INBOX\r\nb STORE 2,4 +FLAGS (\\Deleted)\r\nc EXPUNGE\r\n")
    other.receive(b"d UID STORE 5 +FLAGS (\\Answered)\r\n")
    s = session(store, auth)
    out = s.receive(b"A01 SELECT INBOX (QRESYNC (%s %s 1:6))\r\n" % (validity, known))
    assert tagged(out, "A01").startswith("A01 BAD")  # §3.2.5: ENABLE QRESYNC first
    assert untagged(s.receive(b"A02 ENABLE QRESYNC\r\n"), "ENABLED") == ["* ENABLED QRESYNC"]
    out = s.receive(b"A03 SELECT INBOX (QRESYNC (%s %s 1:6))\r\n" % (validity, known))
    assert untagged(out, "VANISHED") == ["* VANISHED (EARLIER) 2,4"]
    changed = untagged(out, "")
    assert any(ln.startswith("* 3 FETCH (UID 5 FLAGS (\\Answered") for ln in changed), out
    assert tagged(out, "A03").startswith("A03 OK [READ-WRITE]")
    out = s.receive(b"A04 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %s VANISHED)\r\n" % known)
    assert untagged(out, "VANISHED") == ["* VANISHED (EARLIER) 2,4"]
    assert [ln.split()[1] for ln in untagged(out, "") if "FETCH" in ln] == ["3"]
    out = s.receive(b"A05 UID FETCH 3:* (FLAGS) (CHANGEDSINCE %s VANISHED)\r\n" % known)
    assert untagged(out, "VANISHED") == ["* VANISHED (EARLIER) 4"]
    # stale UIDVALIDITY: an ordinary SELECT, nothing resynchronised
    out = s.receive(b"A06 SELECT INBOX (QRESYNC (1 %s))\r\n" % known)
    assert "* OK [CLOSED] previous mailbox closed" in out.decode() and b"VANISHED" not in out
    # expunges are VANISHED now (§3.2.10), mine and another session's
    out = s.receive(b"A07 UID STORE 1,6 +FLAGS.SILENT (\\Deleted)\r\nA08 EXPUNGE\r\n")
    assert untagged(out, "VANISHED") == ["* VANISHED 1,6"] and b"EXPUNGE\r\n" not in out
    other.receive(b"e UID STORE 3 +FLAGS (\\Deleted)\r\nf UID EXPUNGE 3\r\n")
    assert untagged(s.receive(b"A09 NOOP\r\n"), "VANISHED") == ["* VANISHED 3"]
    out = s.receive(b"A10 FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n")
    assert tagged(out, "A10").startswith("A10 BAD")  # not a UID FETCH


# -- CATENATE (RFC 4469) ----------------------------------------------------------------------

_DRAFT = (
    b"From: alice@alpha.test\r\nSubject: draft\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n\r\nkept part\r\n--XX--\r\n"
)


def test_catenate_rfc4469_example(store: MailStore, auth: Authenticator) -> None:
    """§5's shape: the header and a part of a draft by URL, new text around them."""
    uid = store.user(ALICE).append("Drafts", _DRAFT, frozenset(), None)
    validity = store.user(ALICE).mailbox("Drafts").uidvalidity  # type: ignore[union-attr]
    base = f"/Drafts;UIDVALIDITY={validity}/;UID={uid}".encode()
    s = session(store, auth)
    delim = b"\r\n--YY\r\n"
    out = s.receive(
        b"A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"" + base
        + b'/;section=HEADER" TEXT {%d+}\r\n' % len(delim) + delim
        + b' URL "' + base + b'/;section=1.MIME" URL "' + base + b'/;section=1"'
        + b" TEXT {10+}\r\n\r\n--YY--\r\n)\r\n"
    )  # fmt: skip
    assert tagged(out, "A003").startswith("A003 OK [APPENDUID")
    built = store.user(ALICE).messages("Drafts")[-1]
    header = _DRAFT.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    expected = (
        header + delim + b"Content-Type: text/plain\r\n\r\n" + b"kept part" + b"\r\n--YY--\r\n"
    )
    assert store.user(ALICE).read("Drafts", built.path) == expected
    assert built.flags == {"\\Seen", "\\Draft", "$MDNSent"}
    bad = b'A004 APPEND Drafts CATENATE (URL "/Drafts;UIDVALIDITY=1/;UID=1")\r\n'
    assert tagged(s.receive(bad), "A004") == (
        "A004 NO [BADURL /Drafts;UIDVALIDITY=1/;UID=1] cannot use this URL"
    )
    s.receive(b"s SELECT Drafts\r\n")  # a URL relative to the selected mailbox
    out = s.receive(b'A005 APPEND Trash CATENATE (URL ";UID=%d/;SECTION=1")\r\n' % uid)
    assert tagged(out, "A005").startswith("A005 OK")
    (row,) = store.user(ALICE).messages("Trash")
    assert store.user(ALICE).read("Trash", row.path) == b"kept part"
