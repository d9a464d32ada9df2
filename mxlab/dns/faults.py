"""Run-time DNS faults: the lab (scenarios, tests) writes them, the DNS node applies them
on start and on SIGHUP, so an outage can be staged without restarting the server.

SIGHUP is asynchronous: each write stamps the file with a new ``generation``, and the
node writes that generation to ``faults.applied`` once its answers follow the file, so
the lab can wait for the change (``wait_applied``) instead of racing it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

FAULTS_FILE = "faults.json"
APPLIED_FILE = "faults.applied"
_KEYS = {"servfail", "timeout", "drop_mx", "generation"}


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
    """Atomically replace the node's fault file with a new generation; then signal the
    node with SIGHUP and ``wait_applied``."""
    path = Path(state_dir) / FAULTS_FILE
    data = {
        "servfail": list(servfail),
        "timeout": list(timeout),
        "drop_mx": list(drop_mx),
        "generation": os.urandom(16).hex(),  # not uuid: 0.5 MiB in the DNS node
    }
    _replace(path, json.dumps(data, indent=2) + "\n")
    return path


def _replace(path: Path, text: str) -> None:
    """Write then rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_faults(state_dir: str | Path) -> Faults:
    """The faults in force: none when the file is absent. Raises ValueError if malformed."""
    return read_request(state_dir)[0]


def read_request(state_dir: str | Path) -> tuple[Faults, str]:
    """The faults the file asks for and its generation ("" if absent or unstamped)."""
    path = Path(state_dir) / FAULTS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Faults(), ""
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - _KEYS:
        raise ValueError(f"{path}: expected an object with servfail, timeout, drop_mx lists")
    lists = {k: data.get(k, []) for k in ("servfail", "timeout", "drop_mx")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ValueError(f"{path}: {key} must be a list of names")
    generation = data.get("generation", "")
    if not isinstance(generation, str):
        raise ValueError(f"{path}: generation must be a string")
    return Faults.of(**lists), generation


def mark_applied(state_dir: str | Path, generation: str) -> None:
    """The node's side: its answers now follow the file of this generation."""
    _replace(Path(state_dir) / APPLIED_FILE, generation + "\n")


def applied(state_dir: str | Path) -> str | None:
    """The generation the node last applied; None before it applied any."""
    try:
        return (Path(state_dir) / APPLIED_FILE).read_text().strip()
    except FileNotFoundError:
        return None


def wait_applied(state_dir: str | Path, timeout: float = 10.0) -> bool:
    """Poll until the node has applied the fault file as it is now; False on timeout
    (the node is down, or the file is malformed and the node kept its old faults)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            wanted = read_request(state_dir)[1]
        except ValueError:
            wanted = None
        if wanted is not None and applied(state_dir) == wanted:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
