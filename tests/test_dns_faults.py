"""The fault file the lab writes and the DNS node reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxlab.dns.faults import Faults, read_faults, write_faults


def test_round_trip_normalizes_names(tmp_path: Path) -> None:
    path = write_faults(tmp_path / "state", servfail=["Beta.Test"], drop_mx=["alpha.test."])
    assert path == tmp_path / "state" / "faults.json"
    faults = read_faults(tmp_path / "state")
    assert faults == Faults.of(servfail=["beta.test."], drop_mx=["alpha.test"])
    assert faults.servfail == {"beta.test."} and not faults.timeout


def test_no_file_means_no_faults(tmp_path: Path) -> None:
    assert read_faults(tmp_path) == Faults()


@pytest.mark.parametrize(
    "text", ["{broken", "[]", '{"servfail": "beta.test"}', '{"servfail": [1]}', '{"nxdomain": []}']
)
def test_malformed_file_is_a_value_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "faults.json").write_text(text)
    with pytest.raises(ValueError, match="faults.json"):
        read_faults(tmp_path)


def test_rewrite_replaces_the_file_atomically(tmp_path: Path) -> None:
    write_faults(tmp_path, timeout=["mx.beta.test"])
    write_faults(tmp_path)
    assert read_faults(tmp_path) == Faults()
    assert [p.name for p in tmp_path.iterdir()] == ["faults.json"]
