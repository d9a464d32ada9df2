"""Run-time DNS faults: the lab (scenarios, tests) writes them, the DNS node applies them
on start and on SIGHUP, so an outage can be staged without restarting the server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

FAULTS_FILE = "faults.json"


def normalize_name(name: str) -> str:
    """Lowercased, absolute: the form the DNS node compares names in (RFC 4343)."""
    return name.strip().rstrip(".").lower() + "."


@dataclass(frozen=True)
class Faults:
    """SERVFAIL for ``servfail`` names, no answer at all for ``timeout`` names, and the
    MX RRset of ``drop_mx`` domains hidden (so MX queries get NODATA)."""

    servfail: frozenset[str] = field(default_factory=frozenset)
    timeout: frozenset[str] = field(default_factory=frozenset)
    drop_mx: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        servfail: Iterable[str] = (),
        timeout: Iterable[str] = (),
        drop_mx: Iterable[str] = (),
    ) -> Faults:
        return cls(
            frozenset(map(normalize_name, servfail)),
            frozenset(map(normalize_name, timeout)),
            frozenset(map(normalize_name, drop_mx)),
        )


def write_faults(
    state_dir: str | Path,
    servfail: Iterable[str] = (),
    timeout: Iterable[str] = (),
    drop_mx: Iterable[str] = (),
) -> Path:
    """Atomically replace the node's fault file; signal the node with SIGHUP afterwards."""
    path = Path(state_dir) / FAULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"servfail": list(servfail), "timeout": list(timeout), "drop_mx": list(drop_mx)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # the node never reads a half-written file
    return path


def read_faults(state_dir: str | Path) -> Faults:
    """The faults in force: none when the file is absent. Raises ValueError if malformed."""
    path = Path(state_dir) / FAULTS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Faults()
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"servfail", "timeout", "drop_mx"}:
        raise ValueError(f"{path}: expected an object with servfail, timeout, drop_mx lists")
    lists = {k: data.get(k, []) for k in ("servfail", "timeout", "drop_mx")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ValueError(f"{path}: {key} must be a list of names")
    return Faults.of(**lists)
