"""IMAP without sockets: the command reader, tokenizer, MIME sections, SEARCH and the
session state machine, plus property tests that random input never breaks it."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.imap_mime import parse, section
from mxlab.nodes.store.imap_parser import (
    Command,
    CommandReader,
    Continue,
    ParseError,
    Refused,
    format_uid_set,
    parse_sequence_set,
    tokenize,
)
from mxlab.nodes.store.imap_session import ImapSession
from mxlab.nodes.store.mailstore import MailStore
from tests.test_store_support import (
    PASSWORDS,
    auth_fixture,  # noqa: F401 (the "auth" fixture)
    message,
    store_config,
    store_fixture,  # noqa: F401 (the "store" fixture)
)

MULTIPART = (
    b"From: a@beta.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello text\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="a.bin"\r\n\r\nAAEC\r\n--XX--\r\nepilogue\r\n'
)


# -- command reader and tokenizer ---------------------------------------------------------


def test_synchronising_literal_asks_to_continue_then_completes() -> None:
    reader = CommandReader()
    events = reader.feed(b"a APPEND INBOX {5}\r\n")
    assert events == [Continue()]
    assert reader.feed(b"hel") == []
    events = reader.feed(b"lo\r\n")
    assert events == [Command(b"a APPEND INBOX {5}\r\nhello")]


def test_literal_plus_needs_no_continuation() -> None:
    events = CommandReader().feed(b"a APPEND INBOX {5+}\r\nhello\r\nb NOOP\r\n")
    assert events == [Command(b"a APPEND INBOX {5+}\r\nhello"), Command(b"b NOOP")]


def test_oversized_literal_refused_and_plus_form_is_fatal() -> None:
    reader = CommandReader(max_literal=10)
    assert reader.feed(b"a APPEND INBOX {11}\r\n") == [Refused("a", "literal too large")]
    assert reader.feed(b"b NOOP\r\n") == [Command(b"b NOOP")]
    refused = CommandReader(max_literal=10).feed(b"c APPEND INBOX {11+}\r\n")
    assert refused == [Refused("c", "literal too large", fatal=True)]


def test_overlong_line_refused_once_then_reader_resyncs() -> None:
    reader = CommandReader(max_line=100)
    events = reader.feed(b"a " + b"x" * 200)
    assert events == [Refused("a", "line too long")]
    assert reader.feed(b"y" * 50 + b"\r\nb NOOP\r\n") == [Command(b"b NOOP")]


_STREAM = (
    b"a LOGIN {5}\r\nalice {3+}\r\npw!\r\nb SELECT INBOX\r\n"
    b"c APPEND INBOX (\\Seen) {11+}\r\nhello\r\nworld\r\nd NOOP\r\n"
)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_STREAM)), max_size=12))
def test_commands_are_the_same_however_the_stream_is_cut(cuts: list[int]) -> None:
    whole = [e for e in CommandReader().feed(_STREAM) if isinstance(e, Command)]
    reader = CommandReader()
    pieces, start = [], 0
    for cut in sorted(cuts):
        pieces.append(_STREAM[start:cut])
        start = cut
    pieces.append(_STREAM[start:])
    got = [e for piece in pieces for e in reader.feed(piece) if isinstance(e, Command)]
    assert got == whole and len(whole) == 4


def test_tokenize_strings_lists_literals_and_sections() -> None:
    tokens = tokenize(
        b'a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.10>) "q\\"x" {3}\r\nabc NIL'
    )
    assert tokens == [
        "a",
        "FETCH",
        "1:*",
        ["FLAGS", "BODY.PEEK[HEADER.FIELDS (From To)]<0.10>"],
        b'q"x',
        b"abc",
        "NIL",
    ]


@pytest.mark.parametrize("bad", [b'a "open', b"a (x", b"a x)", b"a {9}\r\nab"])
def test_tokenize_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(ParseError):
        tokenize(bad)


def test_sequence_sets() -> None:
    assert parse_sequence_set("1:3,5,7:*", 9) == [(1, 3), (5, 5), (7, 9)]
    assert parse_sequence_set("*:4", 2) == [(2, 4)]
    with pytest.raises(ParseError):
        parse_sequence_set("0:3", 5)
    assert format_uid_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"


# -- MIME -------------------------------------------------------------------------------


def test_multipart_sections_are_exact_bytes() -> None:
    tree = parse(MULTIPART)
    assert section(tree, [1], "", []) == b"hello text"
    assert section(tree, [2], "", []) == b"AAEC"
    assert section(tree, [2], "MIME", []).startswith(b"Content-Type: application/octet-stream")
    assert section(tree, [], "HEADER.FIELDS", ["subject"]) == b"Subject: parts\r\n\r\n"
    assert section(tree, [3], "", []) == b""
    assert section(tree, [], "", []) == MULTIPART


# -- the session ------------------------------------------------------------------------


def session(store: MailStore, auth: Authenticator, user: str = "alice@alpha.test") -> ImapSession:
    s = ImapSession(store, auth, "store.alpha.test")
    assert s.greeting().startswith(b"* OK [CAPABILITY IMAP4rev1")
    out = s.receive(f"L LOGIN {user} {PASSWORDS[user]}\r\n".encode())
    assert out.startswith(b"L OK"), out
    return s


def tagged(out: bytes, tag: str) -> str:
    lines = [ln for ln in out.decode("utf-8", "replace").split("\r\n") if ln.startswith(tag + " ")]
    assert lines, out
    return lines[-1]


def test_login_failure_and_commands_before_login(store: MailStore, auth: Authenticator) -> None:
    s = ImapSession(store, auth, "h")
    assert tagged(s.receive(b"a LOGIN alice@alpha.test wrong\r\n"), "a").startswith(
        "a NO [AUTHENTICATIONFAILED]"
    )
    assert tagged(s.receive(b"b SELECT INBOX\r\n"), "b").startswith("b BAD")
    assert tagged(s.receive(b"c FROB\r\n"), "c").startswith("c BAD")
    assert tagged(s.receive(b"d NOOP\r\n"), "d") == "d OK NOOP completed"


def test_big_literal_before_login_is_refused_and_session_goes_on(
    store: MailStore, auth: Authenticator
) -> None:
    s = ImapSession(store, auth, "h")
    assert s.receive(b"a LOGIN {100000}\r\n") == b"a BAD literal too large\r\n"
    assert s.receive(b"b LOGIN alice@alpha.test {8}\r\n") == b"+ Ready for literal data\r\n"
    out = s.receive(b"alice-pw\r\n")
    assert tagged(out, "b").startswith("b OK")


def test_authenticate_plain_with_and_without_initial_response(
    store: MailStore, auth: Authenticator
) -> None:
    token = base64.b64encode(b"\0bob@alpha.test\0bob-pw")
    s = ImapSession(store, auth, "h")
    assert tagged(s.receive(b"a AUTHENTICATE PLAIN " + token + b"\r\n"), "a").startswith("a OK")
    s2 = ImapSession(store, auth, "h")
    assert s2.receive(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert tagged(s2.receive(token + b"\r\n"), "a").startswith("a OK")


def test_select_fetch_and_flags(store: MailStore, auth: Authenticator) -> None:
    data = message("one")
    store.user("alice@alpha.test").append("INBOX", data, frozenset(), None)
    s = session(store, auth)
    out = s.receive(b"a SELECT INBOX\r\n")
    assert b"* 1 EXISTS\r\n" in out and b"* 1 RECENT\r\n" in out
    assert re.search(rb"\* OK \[UIDVALIDITY \d+\]", out)
    assert tagged(out, "a") == "a OK [READ-WRITE] SELECT completed"
    out = s.receive(b"b FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n")
    assert f"RFC822.SIZE {len(data)}".encode() in out
    assert b"{%d}\r\n" % len(data) + data in out
    assert b"\\Seen" not in out  # PEEK leaves \Seen alone
    out = s.receive(b"c FETCH 1 BODY[TEXT]\r\n")
    assert b"FLAGS (\\Recent \\Seen)" in out  # §6.4.5: the implied flag change is shown
    out = s.receive(b"d UID STORE 1 +FLAGS.SILENT (\\Flagged)\r\ne FETCH 1 FLAGS\r\n")
    assert b"\\Flagged" in out and tagged(out, "e").startswith("e OK")


def test_search_criteria(store: MailStore, auth: Authenticator) -> None:
    mail = store.user("alice@alpha.test")
    mail.append("INBOX", message("apple", b"red fruit\r\n"), frozenset({"\\Seen"}), None)
    mail.append("INBOX", message("banana", b"yellow fruit\r\n" * 50), frozenset(), None)
    s = session(store, auth)
    s.receive(b"a SELECT INBOX\r\n")

    def search(criteria: str) -> list[int]:
        out = s.receive(f"s SEARCH {criteria}\r\n".encode())
        line = next(ln for ln in out.split(b"\r\n") if ln.startswith(b"* SEARCH"))
        return [int(n) for n in line.split()[2:]]

    assert search("ALL") == [1, 2]
    assert search("UNSEEN") == [2]
    assert search("SUBJECT BANANA") == [2]
    assert search('HEADER Message-ID "<apple@beta.test>"') == [1]
    assert search("BODY red") == [1]
    assert search("NOT SEEN") == [2]
    assert search("OR SUBJECT apple LARGER 500") == [1, 2]
    assert search("UID 2:*") == [2]
    assert search("SINCE 1-Jan-2000 SENTON 28-Nov-2026") == [1, 2]
    assert tagged(s.receive(b"x SEARCH CHARSET KOI8-R ALL\r\n"), "x").startswith("x NO [BADCHARSET")
    assert tagged(s.receive(b"y SEARCH FROBNICATE\r\n"), "y").startswith("y BAD")


def test_other_sessions_see_delivery_and_expunge(store: MailStore, auth: Authenticator) -> None:
    a, b = session(store, auth), session(store, auth)
    a.receive(b"a SELECT INBOX\r\n")
    b.receive(b"b SELECT INBOX\r\n")
    store.user("alice@alpha.test").append("INBOX", message("new"), frozenset(), None)
    assert b"* 1 EXISTS" in a.receive(b"n NOOP\r\n")
    assert b"* 1 EXISTS" in b.receive(b"n NOOP\r\n")
    b.receive(b"s STORE 1 +FLAGS (\\Deleted)\r\n")
    assert b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))" in a.receive(b"n NOOP\r\n")
    out = b.receive(b"e EXPUNGE\r\n")
    assert b"* 1 EXPUNGE" in out
    # §7.4.1: not during FETCH, but at the next NOOP
    assert b"EXPUNGE" not in a.receive(b"f FETCH 1 FLAGS\r\n")
    assert b"* 1 EXPUNGE" in a.receive(b"n NOOP\r\n")


def test_idle_is_woken_by_delivery(store: MailStore, auth: Authenticator) -> None:
    s = session(store, auth)
    s.receive(b"a SELECT INBOX\r\n")
    woken = []
    s.notify = lambda: woken.append(True)
    assert s.receive(b"i IDLE\r\n") == b"+ idling\r\n"
    store.user("alice@alpha.test").append("INBOX", message("ping"), frozenset(), None)
    assert woken
    assert b"* 1 EXISTS" in s.updates()
    assert tagged(s.receive(b"DONE\r\n"), "i") == "i OK IDLE terminated"


def test_mailbox_management_copy_move_uidplus(store: MailStore, auth: Authenticator) -> None:
    s = session(store, auth)
    out = s.receive(b'l LIST "" "*"\r\n')
    for name, use in (("Sent", "\\Sent"), ("Trash", "\\Trash"), ("Junk", "\\Junk")):
        assert f'{use}) "." "{name}"'.encode() in out
    assert tagged(s.receive(b"c CREATE Work.2026\r\n"), "c").startswith("c OK")
    assert tagged(s.receive(b"c CREATE Work.2026\r\n"), "c").startswith("c NO [ALREADYEXISTS]")
    assert tagged(s.receive(b"r RENAME Work Archive\r\n"), "r").startswith("r NO [NONEXISTENT]")
    assert tagged(s.receive(b"r RENAME Work.2026 Old.2026\r\n"), "r").startswith("r OK")
    out = s.receive(b'l LIST "" "%"\r\n')
    assert b'* LIST (\\Noselect \\HasChildren) "." "Old"' in out
    assert b'"Old.2026"' not in out
    out = s.receive(b"a APPEND INBOX (\\Seen) {5+}\r\nhello\r\n")
    m = re.search(rb"a OK \[APPENDUID (\d+) 1\]", out)
    assert m, out
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"c UID COPY 1 Old.2026\r\n")
    assert re.search(rb"c OK \[COPYUID \d+ 1 1\]", out)
    out = s.receive(b"m MOVE 1 Trash\r\n")
    assert b"* OK [COPYUID" in out and b"* 1 EXPUNGE" in out
    out = s.receive(b"t STATUS Trash (MESSAGES UNSEEN)\r\nu STATUS INBOX (MESSAGES)\r\n")
    assert b'* STATUS "Trash" (MESSAGES 1 UNSEEN 0)' in out
    assert b'* STATUS "INBOX" (MESSAGES 0)' in out
    assert tagged(s.receive(b"y COPY 1 Nowhere\r\n"), "y").startswith("y NO [TRYCREATE]")


def test_fetch_bodystructure_of_multipart(store: MailStore, auth: Authenticator) -> None:
    store.user("alice@alpha.test").append("INBOX", MULTIPART, frozenset(), None)
    s = session(store, auth)
    s.receive(b"a EXAMINE INBOX\r\n")
    out = s.receive(b"b FETCH 1 (BODYSTRUCTURE BODY[2] ENVELOPE)\r\n")
    assert b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 10 1' in out
    assert b'"MIXED" ("BOUNDARY" "XX")' in out
    assert b'("attachment" ("FILENAME" "a.bin"))' in out
    assert b"BODY[2] {4}\r\nAAEC" in out
    assert b'"parts" (("' not in out and b'ENVELOPE (NIL "parts"' in out
    # EXAMINE is read-only: no \Seen was set, and STORE is refused
    assert tagged(s.receive(b"c STORE 1 +FLAGS (\\Seen)\r\n"), "c").startswith("c NO [READ-ONLY]")


# -- properties ---------------------------------------------------------------------------

_tags = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
_words = st.sampled_from(
    [
        "FETCH",
        "UID",
        "STORE",
        "SEARCH",
        "SELECT",
        "LIST",
        "1:*",
        "(",
        ")",
        '"x"',
        "BODY[",
        "BODY[1.MIME]<0.5>",
        "{3}",
        "NOT",
        "OR",
        "\\Seen",
        "+FLAGS",
        "INBOX",
        "*",
        "0",
        "APPEND",
        "COPY",
        "STATUS",
        "(MESSAGES)",
        "IDLE",
        "CREATE",
        "",
    ]
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[MailStore, Authenticator]:
    tmp = tmp_path_factory.mktemp("prop")
    mail = MailStore(tmp / "mail")
    mail.user("alice@alpha.test").append("INBOX", MULTIPART, frozenset(), None)
    return mail, Authenticator(store_config(tmp))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(tag=_tags, words=st.lists(_words | st.text(max_size=8), max_size=8))
def test_any_command_line_gets_a_tagged_reply(
    shared: tuple[MailStore, Authenticator], tag: str, words: list[str]
) -> None:
    s = session(*shared)
    s.receive(b"s SELECT INBOX\r\n")
    line = " ".join([tag, *words]).replace("\r", "").replace("\n", "")
    if "IDLE" in line.upper() or re.search(r"\{\d+\}$", line):
        return  # continuation states are covered by their own tests
    out = s.receive(line.encode("utf-8", "surrogateescape") + b"\r\n")
    assert re.search(rb"(^|\r\n)" + re.escape(tag.encode()) + rb" (OK|NO|BAD) ", out), (line, out)
    assert tagged(s.receive(b"zz NOOP\r\n"), "zz").startswith(("zz OK", "zz BAD"))
    s.close()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_never_raise(
    shared: tuple[MailStore, Authenticator], chunks: list[bytes]
) -> None:
    s = ImapSession(*shared, "h")
    for chunk in chunks:
        s.receive(chunk)
    s.close()


def test_append_date_internaldate_and_encoded_subject_search(
    store: MailStore, auth: Authenticator
) -> None:
    s = session(store, auth)
    data = b"Subject: =?utf-8?q?caf=C3=A9_menu?=\r\nFrom: x@beta.test\r\n\r\nhi\r\n"
    out = s.receive(
        b'a APPEND INBOX () "05-Mar-2020 10:00:00 +0100" {%d+}\r\n' % len(data) + data + b"\r\n"
    )
    assert tagged(out, "a").startswith("a OK [APPENDUID")
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"f FETCH 1 (INTERNALDATE ENVELOPE)\r\n")
    assert b'INTERNALDATE " 5-Mar-2020 09:00:00 +0000"' in out
    assert b'"=?utf-8?q?caf=C3=A9_menu?="' in out  # ENVELOPE keeps the encoded form (§7.4.2)
    out = s.receive("g SEARCH CHARSET UTF-8 SUBJECT café BEFORE 6-Mar-2020\r\n".encode())
    assert b"* SEARCH 1\r\n" in out
    assert b"* SEARCH\r\n" in s.receive(b"h SEARCH SINCE 6-Mar-2020\r\n")
