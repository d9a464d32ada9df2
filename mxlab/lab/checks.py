"""Prove delivery: submit tagged mail, fetch it back by IMAP and POP3, compare bytes and
the ``Received:`` chain with the route the plan predicts."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

from mxlab.lab.mail import (
    MAIL_ERRORS,
    build_message,
    imap_by_message_id,
    pop3_by_message_id,
    submit,
)
from mxlab.lab.plan import LabPlan, predict_route

# trace headers, and the ones mail authentication adds on the way (RFC 8601, RFC 6376,
# RFC 8617; the relay's quarantine mark): all above what the user submitted
_TRACE = re.compile(
    rb"^(received|return-path|delivered-to|authentication-results|dkim-signature"
    rb"|arc-seal|arc-message-signature|arc-authentication-results|x-mxlab-quarantine):",
    re.I,
)
_AUTH_RESULTS = re.compile(
    rb"^authentication-results:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M
)
_METHOD = re.compile(r"(?:^|[;\s])(spf|dkim|dmarc|arc)=([a-z]+)", re.I)
_BY = re.compile(rb"\bby\s+([^\s;()]+)", re.I)


@dataclass
class Result:
    sender: str
    rcpt: str
    message_id: str
    expected: list[list[str]]
    imap: bool = False
    pop3: bool = False
    bytes_equal: bool = False
    latency: float | None = None  # seconds from 250 to first IMAP sight
    hops: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def route_ok(self) -> bool:
        return len(self.hops) == len(self.expected) and all(
            h in alts for h, alts in zip(self.hops, self.expected, strict=True)
        )

    @property
    def ok(self) -> bool:
        return self.imap and self.pop3 and self.bytes_equal and self.route_ok and not self.error

    @property
    def why(self) -> str:
        """What failed, in words ("" when ok)."""
        if self.error:
            return self.error
        if not self.route_ok:
            want = " > ".join("|".join(alts) for alts in self.expected)
            return f"route differs from the plan ({want})"
        return ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"route_ok": self.route_ok, "ok": self.ok}


def split_trace(raw: bytes) -> tuple[list[str], bytes]:
    """Peel the trace headers a delivery prepended (RFC 5321 §4.4); return the hosts of
    each ``Received: by``, oldest first, and the message as it was submitted."""
    lines = raw.split(b"\r\n")
    hosts: list[str] = []
    i = 0
    while i < len(lines) and _TRACE.match(lines[i]):
        header = lines[i]
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            header += b" " + lines[i].strip()
            i += 1
        if header[:9].lower() == b"received:":
            m = _BY.search(header)
            hosts.append(m.group(1).decode().lower().rstrip(".") if m else "?")
    return list(reversed(hosts)), b"\r\n".join(lines[i:])


def auth_results(raw: bytes) -> str | None:
    """The topmost Authentication-Results header (the last MX's, RFC 8601 §5), unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    m = _AUTH_RESULTS.search(head)
    if m is None:
        return None
    return " ".join(m.group(1).decode("utf-8", "replace").split())


def auth_methods(header: str) -> dict[str, list[str]]:
    """method -> its results in an Authentication-Results value (RFC 8601 §2.2)."""
    found: dict[str, list[str]] = {}
    for method, result in _METHOD.findall(header):
        found.setdefault(method.lower(), []).append(result.lower())
    return found


FULL_PAIRS_MAX = 240  # ordered user pairs checked in full (16 users); more are sampled
SAMPLE_K = 3  # a sampled check mails each domain to this many others


def choose_pairs(plan: LabPlan, sample: int | None = None) -> tuple[list[tuple[str, str]], int]:
    """(sender, recipient) pairs to check and the k they sample (0: every ordered pair).

    ``sample`` None samples only above FULL_PAIRS_MAX pairs, 0 never, k > 0 always.
    Sampled, each domain mails the k domains after it (in name order, wrapping round)
    and itself when it has two users: every domain sends k or k+1 messages and receives
    as many, so the check grows linearly with the domains instead of with the square
    of the users. Senders and recipients take turns within each domain."""
    users = [u.address for u in plan.users]
    full = [(s, r) for s in users for r in users if s != r]
    k = SAMPLE_K if sample is None and len(full) > FULL_PAIRS_MAX else (sample or 0)
    if k == 0:
        return full, 0
    by_domain: dict[str, list[str]] = {}
    for user in plan.users:
        by_domain.setdefault(user.domain, []).append(user.address)
    domains = sorted(by_domain)
    drawn: dict[tuple[str, str], int] = {}  # (domain, "from"|"to") -> picks so far

    def draw(domain: str, role: str, avoid: str = "") -> str:
        members = by_domain[domain]
        n = drawn.get((domain, role), 0)
        pick = members[n % len(members)]
        if pick == avoid:
            n += 1
            pick = members[n % len(members)]
        drawn[domain, role] = n + 1
        return pick

    pairs = []
    for i, domain in enumerate(domains):
        targets = [domains[(i + j) % len(domains)] for j in range(1, min(k, len(domains) - 1) + 1)]
        if len(by_domain[domain]) > 1:
            targets.insert(0, domain)
        for target in targets:
            sender = draw(domain, "from")
            pairs.append((sender, draw(target, "to", avoid=sender)))
    return pairs, k


def check_pairs(
    plan: LabPlan, deadline: float = 60.0, pairs: list[tuple[str, str]] | None = None
) -> list[Result]:
    """Mail for each (sender, recipient) pair (default: every ordered pair of distinct
    users), then fetch each back."""
    if pairs is None:
        pairs = choose_pairs(plan, 0)[0]
    results: list[Result] = []
    sent: dict[str, bytes] = {}
    submitted_at: dict[str, float] = {}
    for sender, rcpt in pairs:
        expected = [sorted(alts) for alts in predict_route(plan, sender, rcpt)]
        msg = build_message(sender, [rcpt], f"mxlab check {sender} -> {rcpt}", _BODY)
        res = Result(sender, rcpt, msg["Message-ID"], expected)
        try:
            sent[res.message_id] = submit(plan, msg)
            submitted_at[res.message_id] = time.monotonic()
        except MAIL_ERRORS as exc:
            res.error = f"submission failed: {exc}"
        results.append(res)
    collect(plan, results, sent, submitted_at, time.monotonic() + deadline)
    return results


def collect(
    plan: LabPlan,
    results: list[Result],
    sent: dict[str, bytes],
    submitted_at: dict[str, float],
    deadline: float,
) -> None:
    """Poll IMAP until every submitted copy is seen or the deadline passes, then fetch
    each by POP3 too and judge bytes and route. A copy is one (recipient, Message-ID):
    a message to two domains is two copies, each judged on its own route."""
    pending = [r for r in results if r.message_id in sent]
    by_rcpt: dict[str, list[Result]] = {}
    for r in pending:
        by_rcpt.setdefault(r.rcpt, []).append(r)
    fetched: dict[tuple[str, str], bytes] = {}
    while True:
        for rcpt, rs in by_rcpt.items():
            want = [r.message_id for r in rs if (rcpt, r.message_id) not in fetched]
            if not want:
                continue
            try:
                got = imap_by_message_id(plan, rcpt, want)
            except MAIL_ERRORS:
                continue  # the store may be restarting; poll again
            now = time.monotonic()
            for r in rs:
                if r.message_id in got and (rcpt, r.message_id) not in fetched:
                    fetched[rcpt, r.message_id] = got[r.message_id]
                    r.imap = True
                    r.latency = now - submitted_at[r.message_id]
        done = all((r.rcpt, r.message_id) in fetched for r in pending)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for rcpt, rs in by_rcpt.items():
        try:
            popped = pop3_by_message_id(plan, rcpt, [r.message_id for r in rs])
        except MAIL_ERRORS as exc:
            for r in rs:
                r.error = r.error or f"POP3: {exc}"
            popped = {}
        for r in rs:
            raw = fetched.get((rcpt, r.message_id))
            if raw is None:
                r.error = r.error or "not delivered before the deadline"
                continue
            r.hops, body = split_trace(raw)
            r.bytes_equal = body == sent[r.message_id]
            pop_raw = popped.get(r.message_id)
            r.pop3 = pop_raw is not None and split_trace(pop_raw)[1] == sent[r.message_id]
            if not r.bytes_equal:
                r.error = r.error or "IMAP copy differs from what was submitted"
            elif not r.pop3:
                r.error = r.error or "POP3 copy missing or different"


_BODY = (
    "This message was sent by mxlab to prove delivery across the lab.\n"
    "Line with a leading dot follows:\n.hidden?\n"
    "Non-ASCII: gr\u00fc\u00dfe, \u65e5\u672c\n"
)
