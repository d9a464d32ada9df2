"""Retransmission suppression (RFC 1047): identical bytes from the same sender."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxlab.nodes.relay.dedupe import DuplicateFilter

CONTENT = b"Received: from a by up.test id Q1; now\r\nSubject: s\r\n\r\nbody\r\n"


def test_same_bytes_again_are_recognised_per_recipient(tmp_path: Path) -> None:
    dupes = DuplicateFilter(tmp_path / "d.log", ttl=60)
    key = dupes.key("alice@alpha.test", CONTENT)
    assert dupes.check(key, ["bob@beta.test"]) == (None, ["bob@beta.test"])
    dupes.remember(key, "Q1", ["bob@beta.test"])
    assert dupes.check(key, ["BOB@beta.test"]) == ("Q1", [])
    assert dupes.check(key, ["bob@beta.test", "carol@beta.test"]) == ("Q1", ["carol@beta.test"])


@pytest.mark.parametrize(
    ("sender", "content"),
    [("mallory@alpha.test", CONTENT), ("alice@alpha.test", CONTENT.replace(b"Q1", b"Q2"))],
)
def test_other_sender_or_other_bytes_are_new(sender: str, content: bytes, tmp_path: Path) -> None:
    dupes = DuplicateFilter(tmp_path / "d.log", ttl=60)
    dupes.remember(dupes.key("alice@alpha.test", CONTENT), "Q1", ["bob@beta.test"])
    assert dupes.check(dupes.key(sender, content), ["bob@beta.test"])[0] is None


def test_entries_expire(tmp_path: Path) -> None:
    dupes = DuplicateFilter(tmp_path / "d.log", ttl=-1)  # everything is older than that
    key = dupes.key("a", b"old")
    dupes.remember(key, "Q0", ["x"])
    assert dupes.check(key, ["x"]) == (None, ["x"])


def test_the_table_is_bounded(tmp_path: Path) -> None:
    dupes = DuplicateFilter(tmp_path / "d.log", ttl=60, max_entries=3)
    keys = [dupes.key("a", bytes([n])) for n in range(5)]
    for n, key in enumerate(keys):
        dupes.remember(key, f"Q{n}", ["x"])
    assert dupes.check(keys[0], ["x"])[0] is None
    assert dupes.check(keys[4], ["x"])[0] == "Q4"


def test_the_table_outlives_the_process(tmp_path: Path) -> None:
    dupes = DuplicateFilter(tmp_path / "d.log", ttl=60)
    key = dupes.key("alice@alpha.test", CONTENT)
    dupes.remember(key, "Q1", ["bob@beta.test"])
    dupes.close()  # no sync: a SIGKILL keeps what was written
    again = DuplicateFilter(tmp_path / "d.log", ttl=60)
    assert again.check(key, ["bob@beta.test"]) == ("Q1", [])
