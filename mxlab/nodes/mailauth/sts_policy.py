"""MTA-STS policies and records (RFC 8461 §3), sans-IO: the TXT record's id, the
policy text parsed and written, and which MX hosts a policy admits (§4.1)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
MAX_POLICY = 64 * 1024  # §3.3: senders may limit the body; 64 KiB is plenty
MAX_AGE = 31557600  # §3.2: at most a year


class PolicyError(ValueError):
    """A policy or TXT record that does not parse (RFC 8461 §3.1, §3.2)."""


@dataclass(frozen=True)
class Policy:
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]  # patterns: host names, or "*." and a domain
    max_age: int

    def matches(self, host: str) -> bool:
        """RFC 8461 §4.1: an exact name, or "*." standing for one leftmost label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, dot, rest = host.partition(".")
                if label and dot and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def policy_id(text: str) -> str:
    """A TXT id (RFC 8461 §3.1: 1-32 alphanumerics) that changes with the policy."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def parse_txt(values: list[str]) -> str | None:
    """The id of the one ``v=STSv1`` record among a name's TXT values; None if there is
    none. RFC 8461 §3.1: several, or one without a valid id, is as good as none."""
    found = [v for v in values if v.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(
        f.strip().partition("=")[::2] for f in found[0].split(";") if f.strip()
    )  # "v=STSv1; id=...;" -> {"v": "STSv1", "id": ...}
    ident = fields.get("id", "")
    if fields.get("v") != "STSv1" or not (0 < len(ident) <= 32 and ident.isalnum()):
        return None
    return ident


def parse_policy(text: str) -> Policy:
    """RFC 8461 §3.2: "key: value" lines (CRLF or LF); version STSv1, mode, max_age,
    mx (repeated, required unless mode none); unknown keys are ignored."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"line without a colon: {line!r}")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("version: must be STSv1")
    mode = fields.get("mode", [""])
    if len(mode) != 1 or mode[0] not in ("enforce", "testing", "none"):
        raise PolicyError("mode: must be enforce, testing or none")
    age = fields.get("max_age", [""])
    if len(age) != 1 or not age[0].isdigit() or int(age[0]) > MAX_AGE:
        raise PolicyError(f"max_age: must be a number of seconds up to {MAX_AGE}")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if not mx and mode[0] != "none":
        raise PolicyError("mx: at least one line needed")
    return Policy(mode=mode[0], mx=mx, max_age=int(age[0]))


def render_policy(mode: str, mx: list[str], max_age: int) -> str:
    """The policy text a lab domain serves (RFC 8461 §3.2)."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "".join(f"{line}\r\n" for line in lines)
