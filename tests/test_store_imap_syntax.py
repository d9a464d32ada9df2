"""What a conformance run found the store reading wrongly: folded and RFC 2231 MIME
parameters, atom characters in mailbox names, RFC 5322 groups in ENVELOPE, addresses
with display names and comments in SEARCH, and LSUB's \\Noselect parents."""

from __future__ import annotations

import pytest

from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.imap_mime import envelope, parse
from mxlab.nodes.store.imap_parser import tokenize
from mxlab.nodes.store.mailstore import MailStore
from tests.test_store_imap import append, session, tagged
from tests.test_store_support import (
    auth_fixture,  # noqa: F401 (the "auth" fixture)
    store_fixture,  # noqa: F401 (the "store" fixture)
)

_PARTS = (
    b"\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--XX\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n--XX--\r\n"
)


# -- defect 3: MIME parameters -----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        b'multipart/alternative;\r\n\tboundary="XX"',
        b"multipart/alternative; charset=us-ascii;\r\n boundary=XX",
        b'multipart/alternative; boundary="XX" (a comment)',
        b'multipart/alternative;\r\n boundary*0="X";\r\n boundary*1="X"',  # RFC 2231 §3
        b"multipart/alternative; boundary*=us-ascii'en'XX",  # RFC 2231 §4
    ],
)
def test_folded_commented_and_rfc2231_boundaries_split_the_parts(
    store: MailStore, auth: Authenticator, content_type: bytes
) -> None:
    s = session(store, auth)
    append(s, b"Subject: alt\r\nContent-Type: " + content_type + b"\r\n" + _PARTS)
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"f FETCH 1 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.MIME])\r\n")
    assert b'"ALTERNATIVE" (' in out and b'"BOUNDARY" "XX")' in out
    assert b'("TEXT" "PLAIN"' in out and b'("TEXT" "HTML"' in out
    assert b"BODY[1] {5}\r\nfirst" in out
    assert b"BODY[2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n" in out


def test_rfc2231_continued_and_encoded_filename_in_bodystructure() -> None:
    from mxlab.nodes.store.imap_mime import bodystructure

    tree = parse(
        b"Content-Type: application/pdf;\r\n name*0*=utf-8''a%20b;\r\n name*1=\".pdf\"\r\n"
        b'Content-Disposition: attachment;\r\n\tfilename*0="re"; filename*1="port.pdf"\r\n'
        b"\r\nx"
    )
    out = bodystructure(tree)
    assert b'("NAME" "a b.pdf")' in out and b'("attachment" ("FILENAME" "report.pdf"))' in out


# -- defect 4: atoms -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["foo[bar", "!#$&'+,-.0123456789:;<=>?@^_`|}", "a]b"])
def test_legal_atom_characters_in_mailbox_names(
    store: MailStore, auth: Authenticator, name: str
) -> None:
    s = session(store, auth)
    assert tagged(s.receive(f"c CREATE {name}\r\n".encode()), "c") == "c OK CREATE completed"
    assert tagged(s.receive(f"s SELECT {name}\r\n".encode()), "s").startswith("s OK [READ-WRITE]")
    assert tagged(s.receive(f"t STATUS {name} (MESSAGES)\r\n".encode()), "t").startswith("t OK")


def test_an_unclosed_bracket_is_part_of_the_atom_but_fetch_sections_still_parse() -> None:
    assert tokenize(b"a SELECT foo[bar") == ["a", "SELECT", "foo[bar"]
    assert tokenize(b"a FETCH 1 BODY[HEADER.FIELDS (A B)]<0.5>")[3] == (
        "BODY[HEADER.FIELDS (A B)]<0.5>"
    )


# -- defect 5: ENVELOPE groups ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        (b"undisclosed-recipients:;", b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'),
        (
            b'Friends: a@b.test, "Doe, J" <j@d.test>;, e@f.test',
            b'((NIL NIL "Friends" NIL)(NIL NIL "a" "b.test")("Doe, J" NIL "j" "d.test")'
            b'(NIL NIL NIL NIL)(NIL NIL "e" "f.test"))',
        ),
        (b"Team:\r\n a@b.test;", b'((NIL NIL "Team" NIL)(NIL NIL "a" "b.test")(NIL NIL NIL NIL))'),
        (b'"a:b" <q@r.test>', b'(("a:b" NIL "q" "r.test"))'),
    ],
)
def test_envelope_keeps_rfc5322_groups(to: bytes, expected: bytes) -> None:
    """RFC 3501 §7.4.2: a group is marked by (NIL NIL "name" NIL) before its members
    and (NIL NIL NIL NIL) after them; an empty group is not NIL."""
    env = envelope(parse(b"From: x@y.test\r\nTo: " + to + b"\r\n\r\nbody\r\n"))
    assert b" " + expected + b" NIL NIL NIL NIL)" in env


# -- defect 6: SEARCH on addresses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "criterion"),
    [
        (b'From: "Jones, Carol" <carol@beta.test>', 'FROM "Jones, Carol <carol@beta.test>"'),
        (b"From: carol(at work)@beta.test", "FROM carol@beta.test"),
        (b"From: Carol Jones\r\n <carol@beta.test>", 'FROM "Carol Jones <carol@beta.test>"'),
        (b"To: =?utf-8?q?J=C3=BCrgen?= <j@beta.test>", 'TO "J\xfcrgen <j@beta.test>"'),
        (b"Cc: dave@beta.test (Dave Smith)", 'CC "Dave Smith"'),
        (b"Cc: Dave <dave@beta.test>", "CC dave@beta.test"),
    ],
)
def test_search_matches_addresses_written_with_names_and_comments(
    store: MailStore, auth: Authenticator, header: bytes, criterion: str
) -> None:
    s = session(store, auth)
    append(s, b"Subject: other\r\nFrom: nobody@beta.test\r\n\r\nx\r\n")
    append(s, header + b"\r\nSubject: s\r\n\r\nbody\r\n")
    s.receive(b"s SELECT INBOX\r\n")
    out = s.receive(b"f SEARCH CHARSET UTF-8 " + criterion.encode() + b"\r\n")
    assert b"* SEARCH 2\r\n" in out, out


# -- defect 7: LSUB --------------------------------------------------------------------------


def test_lsub_lists_an_unsubscribed_parent_as_noselect(
    store: MailStore, auth: Authenticator
) -> None:
    """RFC 3501 §6.3.9: with "%", a subscribed "Work.2026" whose parent is not
    subscribed shows the parent with \\Noselect."""
    s = session(store, auth)
    s.receive(b"1 CREATE Work.2026\r\n2 SUBSCRIBE Work.2026\r\n")
    out = s.receive(b'3 LSUB "" %\r\n')
    assert b'* LSUB (\\Noselect) "." "Work"\r\n' in out
    assert b"Work.2026" not in out
    out = s.receive(b'4 LSUB "" *\r\n')
    assert b'* LSUB () "." "Work.2026"\r\n' in out and b'"Work"\r\n' not in out
    s.receive(b"5 CREATE Work\r\n5 SUBSCRIBE Work\r\n")
    assert b'* LSUB () "." "Work"\r\n' in s.receive(b'6 LSUB "" %\r\n')
