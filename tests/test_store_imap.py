"""IMAP without sockets: the command reader, tokenizer, MIME sections, SEARCH and the
session state machine, plus property tests that random input never breaks it."""

from __future__ import annotations

import base64
import re
from pathlib import Path

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
from mxlab.nodes.store.pop3 import Pop3Session
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


def append(s: ImapSession, data: bytes, extra: bytes = b"") -> bytes:
    """APPEND to INBOX with a LITERAL+ literal; ``extra`` is flags and date."""
    return s.receive(b"a APPEND INBOX %s{%d+}\r\n" % (extra, len(data)) + data + b"\r\n")


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
    line = " ".join([tag, *words]).replace("\r", "").replace("\n", "")
    if "IDLE" in line.upper() or re.search(r"\{\d+\}$", line):
        return  # continuation states are covered by their own tests
    s = session(*shared)
    try:
        s.receive(b"s SELECT INBOX\r\n")
        out = s.receive(line.encode("utf-8", "surrogateescape") + b"\r\n")
        tag_re = rb"(^|\r\n)" + re.escape(tag.encode()) + rb" (OK|NO|BAD) "
        assert re.search(tag_re, out), (line, out)
        assert tagged(s.receive(b"zz NOOP\r\n"), "zz").startswith(("zz OK", "zz BAD"))
    finally:
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
    out = append(s, data, b'() "05-Mar-2020 10:00:00 +0100" ')
    assert tagged(out, "a").startswith("a OK [APPENDUID")
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"f FETCH 1 (INTERNALDATE ENVELOPE)\r\n")
    assert b'INTERNALDATE " 5-Mar-2020 09:00:00 +0000"' in out
    assert b'"=?utf-8?q?caf=C3=A9_menu?="' in out  # ENVELOPE keeps the encoded form (§7.4.2)
    out = s.receive("g SEARCH CHARSET UTF-8 SUBJECT café BEFORE 6-Mar-2020\r\n".encode())
    assert b"* SEARCH 1\r\n" in out
    assert b"* SEARCH\r\n" in s.receive(b"h SEARCH SINCE 6-Mar-2020\r\n")


# -- CONDSTORE (RFC 7162), the FETCH cache, storage details --------------------------------


def modseqs(out: bytes) -> dict[int, int]:
    """{sequence number: MODSEQ} from untagged FETCH responses."""
    return {int(n): int(m) for n, m in re.findall(rb"\* (\d+) FETCH \(.*?MODSEQ \((\d+)\)", out)}


def test_condstore_select_fetch_store_search_status(store: MailStore, auth: Authenticator) -> None:
    mail = store.user("alice@alpha.test")
    for name in ("one", "two", "three"):
        mail.append("INBOX", message(name), frozenset(), None)
    a, other = session(store, auth), session(store, auth)
    assert b"CONDSTORE" in a.receive(b"c CAPABILITY\r\n")
    out = a.receive(b"s SELECT INBOX (CONDSTORE)\r\n")
    m = re.search(rb"\* OK \[HIGHESTMODSEQ (\d+)\]", out)
    assert m, out
    start = int(m.group(1))
    other.receive(b"s SELECT INBOX\r\n")
    assert set(modseqs(a.receive(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE 0)\r\n"))) == {1, 2, 3}
    # .SILENT still reports the new MODSEQ once CONDSTORE is on (§3.2)
    out = a.receive(b"t STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
    changed = modseqs(out)
    assert list(changed) == [1] and changed[1] > start and b"FLAGS" not in out
    out = a.receive(b"f FETCH 1:* (UID) (CHANGEDSINCE %d)\r\n" % start)
    assert list(modseqs(out)) == [1]
    # message 1 changed after `start`: a conditional STORE skips it and says so
    out = a.receive(b"u STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)\r\n" % start)
    assert tagged(out, "u") == "u OK [MODIFIED 1] conditional STORE failed"
    assert set(modseqs(out)) == {2, 3}
    highest = max(modseqs(out).values())
    out = a.receive(b"q SEARCH MODSEQ %d\r\n" % highest)
    assert b"* SEARCH 2 3 (MODSEQ %d)\r\n" % highest in out
    out = a.receive(b'q SEARCH MODSEQ "/flags/\\\\Seen" all %d\r\n' % (highest + 1))
    assert b"* SEARCH\r\n" in out
    out = a.receive(b"x STATUS INBOX (HIGHESTMODSEQ MESSAGES)\r\n")
    assert b"(HIGHESTMODSEQ %d MESSAGES 3)" % highest in out
    # a session that never enabled CONDSTORE sees plain flag updates
    out = other.receive(b"n NOOP\r\n")
    assert b"* 2 FETCH (UID 2 FLAGS (\\Seen))" in out and b"MODSEQ" not in out
    other.receive(b"t STORE 3 -FLAGS (\\Seen)\r\n")
    assert re.search(
        rb"\* 3 FETCH \(UID 3 FLAGS \(\\Recent\) MODSEQ \(\d+\)\)", a.receive(b"n NOOP\r\n")
    )
    a.close()
    other.close()


def test_enable_and_modseq_survive_a_reopen(tmp_path: Path, auth: Authenticator) -> None:
    store = MailStore(tmp_path / "m")
    store.user("alice@alpha.test").append("INBOX", message("x"), frozenset(), None)
    s = session(store, auth)
    assert b"* ENABLED CONDSTORE\r\n" in s.receive(b"e ENABLE CONDSTORE X-UNKNOWN\r\n")
    s.receive(b"s SELECT INBOX\r\nt STORE 1 +FLAGS (\\Answered)\r\n")
    out = s.receive(b"f FETCH 1 (MODSEQ)\r\n")
    (before,) = modseqs(out).values()
    s.close()
    store.close()
    again = MailStore(tmp_path / "m")
    s = session(again, auth)
    out = s.receive(b"s EXAMINE INBOX\r\nf FETCH 1 (FLAGS MODSEQ)\r\n")
    assert b"[HIGHESTMODSEQ %d]" % before in out and modseqs(out) == {1: before}
    assert b"\\Answered" in out
    s.close()


def test_structure_items_are_served_from_the_index_cache(
    store: MailStore, auth: Authenticator
) -> None:
    mail = store.user("alice@alpha.test")
    mail.append("INBOX", MULTIPART, frozenset(), None)  # described when stored
    path = mail.maildir.deliver("INBOX", MULTIPART)
    mail.add_written("INBOX", path, len(MULTIPART))  # as recovery indexes a file: not yet
    assert {uid for uid, _ in mail.index.cached("INBOX", 1, 2)} == {1}
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    first = s.receive(b"f FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY)\r\n")
    assert first.count(b"BODYSTRUCTURE ((") == 2
    assert len(mail.index.cached("INBOX", 1, 2)) == 6  # the FETCH cached message 2's
    for info in mail.messages("INBOX"):  # the files are gone: only the cache can answer
        mail.maildir.remove("INBOX", info.path)
    assert s.receive(b"f FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY)\r\n") == first
    assert b"* 1 FETCH" not in s.receive(b"g FETCH 1 BODY.PEEK[]\r\n")  # file needed
    s.receive(b"d STORE 1 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\n")
    assert {uid for uid, _ in mail.index.cached("INBOX", 1, 2)} == {2}
    s.close()


def test_append_stores_crlf_and_copy_is_all_or_nothing(
    store: MailStore, auth: Authenticator
) -> None:
    s = session(store, auth)
    bare = b"Subject: lf\nFrom: x@beta.test\n\nline\n"
    append(s, bare)
    append(s, b"ok\r\n")
    s.receive(b"s SELECT INBOX\r\n")
    crlf = bare.replace(b"\n", b"\r\n")
    out = s.receive(b"f FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n")
    assert b"RFC822.SIZE %d " % len(crlf) in out and b"{%d}\r\n" % len(crlf) + crlf in out
    mail = store.user("alice@alpha.test")
    mail.maildir.remove("INBOX", mail.messages("INBOX")[1].path)
    out = s.receive(b"c COPY 1:2 Trash\r\n")
    assert tagged(out, "c").startswith("c NO [EXPUNGEISSUED]")
    assert mail.messages("Trash") == []
    s.close()


def test_body_and_text_search_see_through_transfer_encodings(
    store: MailStore, auth: Authenticator
) -> None:
    qp = (
        b"Subject: =?utf-8?b?w6lsw6h2ZQ==?=\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\nun caf=C3=A9 cr=C3=A8me\r\n"
    )
    store.user("alice@alpha.test").append("INBOX", qp, frozenset(), None)
    store.user("alice@alpha.test").append("INBOX", MULTIPART, frozenset(), None)
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")

    def search(criteria: bytes) -> bytes:
        out = s.receive(b"q SEARCH CHARSET UTF-8 " + criteria + b"\r\n")
        return next(ln for ln in out.split(b"\r\n") if ln.startswith(b"* SEARCH"))

    assert search("BODY {5+}\r\nCAFÉ".encode()) == b"* SEARCH 1"  # a literal, as imaplib sends
    assert search("TEXT élève".encode()) == b"* SEARCH 1"  # the RFC 2047 subject
    assert search(b"BODY HELLO") == b"* SEARCH 2"
    assert search(b"TEXT nowhere") == b"* SEARCH"
    s.close()


def test_sessions_per_user_are_limited(tmp_path: Path, auth: Authenticator) -> None:
    store = MailStore(tmp_path / "m", max_user_sessions=2)
    first, second = session(store, auth), session(store, auth)
    third = ImapSession(store, auth, "h")
    out = third.receive(b"a LOGIN alice@alpha.test alice-pw\r\n")
    assert out == b"a NO [LIMIT] too many sessions for this user\r\n"
    assert session(store, auth, "bob@alpha.test")  # other users are not affected
    pop = Pop3Session(store, auth, "h")
    assert b"-ERR [SYS/TEMP]" in pop.receive(b"USER alice@alpha.test\r\nPASS alice-pw\r\n")
    first.receive(b"l LOGOUT\r\n")
    assert tagged(third.receive(b"b LOGIN alice@alpha.test alice-pw\r\n"), "b").startswith("b OK")
    second.close()
    assert b"+OK maildrop" in pop.receive(b"USER alice@alpha.test\r\nPASS alice-pw\r\n")


def test_fetch_sections_partials_and_rfc822_items(store: MailStore, auth: Authenticator) -> None:
    store.user("alice@alpha.test").append("INBOX", MULTIPART, frozenset(), None)
    s = session(store, auth)
    s.receive(b"s EXAMINE INBOX\r\n")
    out = s.receive(
        b"f FETCH 1 (BODY.PEEK[1]<2.3> BODY.PEEK[HEADER.FIELDS.NOT (From Subject MIME-Version)]"
        b" BODY.PEEK[2.MIME] BODY.PEEK[]<99999.5> RFC822.HEADER)\r\n"
    )
    assert b"BODY[1]<2> {3}\r\nllo " in out
    assert (
        b'(From Subject MIME-Version)] {48}\r\nContent-Type: multipart/mixed; boundary="XX"' in out
    )
    assert (
        b"BODY[2.MIME] {%d}\r\nContent-Type: application/octet-stream"
        % (len(section(parse(MULTIPART), [2], "MIME", [])))
        in out
    )
    assert b"BODY[]<99999> {0}\r\n" in out  # §6.4.5: past the end is empty, not an error
    header = MULTIPART.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert b"RFC822.HEADER {%d}\r\n" % len(header) + header in out
    assert tagged(out, "f") == "f OK FETCH completed"
    assert tagged(s.receive(b"g FETCH 1 BODY[0]\r\n"), "g").startswith("g BAD")
    assert tagged(s.receive(b"h FETCH 1 BODY[]<1>\r\n"), "h").startswith("h BAD")
    s.close()


def test_keywords_are_announced_in_flags_before_they_are_used(
    store: MailStore, auth: Authenticator
) -> None:
    mail = store.user("alice@alpha.test")
    mail.append("INBOX", message("k"), frozenset({"$Label1"}), None)
    a, b = session(store, auth), session(store, auth)
    out = a.receive(b"s SELECT INBOX\r\n")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)\r\n" in out
    b.receive(b"s SELECT INBOX\r\n")
    out = b.receive(b"t STORE 1 +FLAGS (Work)\r\n")
    assert out.index(b"* FLAGS (") < out.index(b"* 1 FETCH") and b"$Label1 Work)" in out
    out = a.receive(b"n NOOP\r\n")
    assert out.index(b"$Label1 Work)\r\n") < out.index(b"* 1 FETCH (UID 1 FLAGS ($Label1")
    assert b"* FLAGS" not in a.receive(b"n NOOP\r\n")  # said once
    a.close()
    b.close()


def _search_message(sender: str, to: str, subject: str, extra: bytes, body: bytes) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n".encode() + extra + b"\r\n" + body


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> ImapSession:
    """Three messages: 1 and 2 old (another session saw them first), 3 recent."""
    tmp = tmp_path_factory.mktemp("search")
    store, auth = MailStore(tmp / "mail"), Authenticator(store_config(tmp))
    mail = store.user("alice@alpha.test")
    day = 86400.0
    jan1 = 1577880000.0  # 1-Jan-2020 12:00 UTC
    mail.append(
        "INBOX",
        _search_message(
            "Carol <carol@beta.test>",
            "alice@alpha.test",
            "apple",
            b"Cc: dave@gamma.test\r\nBcc: eve@delta.test\r\n"
            b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n",
            b"red\r\n",
        ),
        frozenset({"\\Answered", "\\Seen", "$Work"}),
        jan1,
    )
    mail.append(
        "INBOX",
        _search_message(
            "frank@beta.test", "bob@alpha.test", "banana", b"Date: 1 Jan 2019 00:00 +0000\r\n", b""
        ),
        frozenset({"\\Deleted", "\\Draft", "\\Flagged"}),
        jan1 + day,
    )
    session(store, auth).receive(b"s SELECT INBOX\r\n")  # takes \Recent of 1 and 2
    s = session(store, auth)
    s.receive(b"s SELECT INBOX\r\n")
    mail.append(
        "INBOX",
        _search_message("x@beta.test", "alice@alpha.test", "cherry", b"", b"filler\r\n" * 80),
        frozenset(),
        jan1 + 2 * day,
    )
    assert b"* 3 EXISTS" in s.receive(b"n NOOP\r\n")
    return s


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", [1, 2, 3]),
        ("ANSWERED", [1]),
        ("DELETED", [2]),
        ("DRAFT", [2]),
        ("FLAGGED", [2]),
        ("SEEN", [1]),
        ("UNANSWERED", [2, 3]),
        ("UNDELETED", [1, 3]),
        ("UNDRAFT", [1, 3]),
        ("UNFLAGGED", [1, 3]),
        ("UNSEEN", [2, 3]),
        ("RECENT", [3]),
        ("NEW", [3]),
        ("OLD", [1, 2]),
        ("KEYWORD $Work", [1]),
        ("UNKEYWORD $Work", [2, 3]),
        ("FROM frank", [2]),
        ('FROM "Carol"', [1]),
        ("TO bob", [2]),
        ("CC dave", [1]),
        ("BCC eve@delta", [1]),
        ("SUBJECT cherry", [3]),
        ("HEADER Cc gamma", [1]),
        ('HEADER Bcc ""', [1]),
        ("TEXT banana", [2]),
        ("BODY filler", [3]),
        ("BODY apple", []),
        ("BEFORE 2-Jan-2020", [1]),
        ("ON 2-Jan-2020", [2]),
        ("SINCE 2-Jan-2020", [2, 3]),
        ("SENTBEFORE 1-Jan-2020", [2]),
        ("SENTON 28-Nov-2026", [1]),
        ("SENTSINCE 1-Jan-2020", [1]),
        ("LARGER 500", [3]),
        ("SMALLER 500", [1, 2]),
        ("UID 2:3", [2, 3]),
        ("2:*", [2, 3]),
        ("1,3", [1, 3]),
        ("(FROM carol SEEN)", [1]),
        ("OR FROM carol FROM frank", [1, 2]),
        ("NOT 1", [2, 3]),
        ("CHARSET UTF-8 SUBJECT apple", [1]),
        ("CHARSET US-ASCII UNSEEN NOT DELETED", [3]),
        ("MODSEQ 1", [1, 2, 3]),
    ],
)
def test_every_search_key(searched: ImapSession, criteria: str, expected: list[int]) -> None:
    out = searched.receive(f"q SEARCH {criteria}\r\n".encode())
    assert tagged(out, "q") == "q OK SEARCH completed"
    line = next(ln for ln in out.split(b"\r\n") if ln.startswith(b"* SEARCH"))
    assert [int(n) for n in line.split(b"(")[0].split()[2:]] == expected
