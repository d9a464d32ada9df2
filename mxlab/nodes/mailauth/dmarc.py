"""DMARC evaluation (RFC 7489): policy discovery, identifier alignment, the result and
the policy to apply. DNS is a function argument, so the RFC's examples run offline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

TxtLookup = Callable[[str], list[str]]  # name -> its TXT strings, [] when none


@dataclass(frozen=True)
class Policy:
    """A parsed DMARC record (RFC 7489 §6.3), with its defaults."""

    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"


@dataclass(frozen=True)
class Result:
    result: str  # pass, fail, none, temperror, permerror (RFC 8601 §2.7.1 with RFC 7489 §11.2)
    domain: str  # the RFC5322.From domain
    policy: str = "none"  # what the record asks for this domain: none, quarantine, reject
    reason: str = ""


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2 with the Public Suffix List: a name's public suffix plus one label.
    The lab's names all end in .test (RFC 6761), which the list does not hold, so its
    default rule "*" makes the last label the suffix; the same holds for the RFC's
    example.com. (No list is loaded: nothing in the lab sits under a listed suffix.)"""
    labels = domain.lower().rstrip(".").split(".")
    return ".".join(labels[-2:])


def parse_record(text: str) -> Policy | None:
    """RFC 7489 §6.3-6.4: tag=value pairs, v=DMARC1 first, p= required; an invalid
    record is no record (§6.6.3). pct= is not sampled: the lab applies a policy always."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    first = text.split(";", 1)[0].replace(" ", "")
    p = tags.get("p", "").lower()
    if first != "v=DMARC1" or p not in ("none", "quarantine", "reject"):
        return None
    sp = tags.get("sp", p).lower()
    return Policy(
        p=p,
        sp=sp if sp in ("none", "quarantine", "reject") else p,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
    )


def discover(domain: str, txt: TxtLookup) -> tuple[Policy | None, bool]:
    """RFC 7489 §6.6.3: the record at _dmarc.<From domain>, else at the organizational
    domain's; several records are none. Returns (policy, found at the org domain)."""
    for name, org in ((domain, False), (organizational_domain(domain), True)):
        if org and name == domain.lower():
            break
        records = [r for r in txt(f"_dmarc.{name}") if r.startswith("v=DMARC1")]
        if len(records) == 1:
            policy = parse_record(records[0])
            if policy is not None:
                return policy, org
    return None, False


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict is equal names; relaxed is equal organizational domains."""
    a, b = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


def evaluate(
    from_domain: str,
    spf: tuple[str, str],
    dkim: Sequence[tuple[str, str]],
    txt: TxtLookup,
) -> Result:
    """RFC 7489 §6.6.2: pass when SPF (``(result, mail-from domain)``) or any DKIM
    signature (``(result, d=)``) passes with an identifier aligned to the From domain."""
    policy, at_org = discover(from_domain, txt)
    if policy is None:
        return Result("none", from_domain, reason="no DMARC record")
    wanted = policy.sp if at_org else policy.p  # §6.3 sp=: for subdomains of the org
    spf_result, spf_domain = spf
    if spf_result == "pass" and aligned(spf_domain, from_domain, policy.aspf):
        return Result("pass", from_domain, wanted, "SPF aligned")
    for result, d in dkim:
        if result == "pass" and aligned(d, from_domain, policy.adkim):
            return Result("pass", from_domain, wanted, f"DKIM d={d} aligned")
    return Result("fail", from_domain, wanted, "no aligned SPF or DKIM pass")
