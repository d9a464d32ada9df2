"""Chaos (issue 12): a few hundred messages across three domains while a fault loop
SIGKILLs relays and stores at random and starts them again. Then every acknowledged
recipient copy is accounted for: delivered exactly once, bounced to its sender, or
still queued; none lost, none twice.

Clients submit the way a sending MTA does: a message whose 250 never came (its
relay killed under it) is sent again with the same bytes until one is acknowledged;
the relay's durable duplicate filter must recognise a resend it already queued.
"""

from __future__ import annotations

import contextlib
import random
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mxlab.lab import labdir
from mxlab.lab.lifecycle import bring_up, tear_down
from mxlab.lab.mail import MAIL_ERRORS, build_message, imap_messages, message_id_of, submit
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime import Runtime
from mxlab.lab.topology import parse_topology

from .conftest import WHY_NO_DOCKER, wait_for

DOMAINS = ("alpha", "beta", "gamma")
USERS = ("ann", "ben")
SUBMITTERS = 4
FAULTS_AFTER_SUBMISSION = 3.0  # seconds the fault loop goes on once all is acknowledged


def topology(name: str) -> str:
    nodes = "".join(f"  mx-{d}: {{kind: relay}}\n  store-{d}: {{kind: store}}\n" for d in DOMAINS)
    domains = "".join(
        f"  {d}.test:\n    store: store-{d}\n    mx: [{{node: mx-{d}, preference: 10}}]\n"
        f"    users: {{{', '.join(f'{u}: {u}-{d}-pw' for u in USERS)}}}\n"
        for d in DOMAINS
    )
    return (
        f"name: {name}\n"
        "settings:\n  queue: {retry_initial: 0.3, retry_max: 1.0, lifetime: 600}\n"
        f"nodes:\n  ns: {{kind: dns}}\n{nodes}domains:\n{domains}"
    )


@dataclass
class Tally:
    """What the clients got acknowledged, and what the fault loop did."""

    acked: dict[str, list[str]] = field(default_factory=dict)  # Message-ID -> recipients
    senders: dict[str, str] = field(default_factory=dict)
    resends: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _submit_until_acked(
    plan: LabPlan, jobs: list[tuple[str, list[str], int]], tally: Tally
) -> None:
    deadline = time.monotonic() + 120
    for sender, rcpts, n in jobs:
        msg = build_message(sender, rcpts, f"chaos {n}", f"message {n}\n")
        mid = str(msg["Message-ID"])
        while time.monotonic() < deadline:
            try:
                submit(plan, msg, timeout=5)
                break
            except MAIL_ERRORS as exc:
                if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500:
                    raise  # a refusal is a bug here, not a fault
                with tally.lock:
                    tally.resends += 1
                time.sleep(0.05)
        else:
            raise AssertionError(f"message {n} never acknowledged")
        with tally.lock:
            tally.acked[mid] = rcpts
            tally.senders[mid] = sender


def _faults(
    plan: LabPlan, runtime: Runtime, stop: threading.Event, tally: Tally, rng: random.Random
) -> None:
    victims = [n for n, node in plan.nodes.items() if node.role in ("relay", "store")]
    while not stop.wait(rng.uniform(0.05, 0.3)):
        node = rng.choice(victims)
        runtime.kill(plan, node)
        tally.kills[node] += 1
        stop.wait(rng.uniform(0.02, 0.3))
        runtime.start(plan, node)


def _queued_ids(plan: LabPlan) -> str:
    """Every queue file's bytes, to find a Message-ID still waiting."""
    root = Path(plan.lab_dir) / "nodes"
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in root.glob("*/**/queue/*.msg"))


def account(plan: LabPlan, tally: Tally, within: float) -> dict[str, int]:
    """Wait until every copy arrived (or ``within`` passed), then count."""
    users = [u.address for u in plan.users]
    seen: Counter[tuple[str, str]] = Counter()
    bounced: set[tuple[str, str]] = set()

    def look() -> bool:
        seen.clear()
        bounced.clear()
        for user in users:
            for raw in imap_messages(plan, user):
                mid = message_id_of(raw)
                if mid in tally.acked:
                    seen[(mid, user)] += 1
                elif b"multipart/report" in raw:  # a DSN: which copies did it bounce?
                    for orig, rcpts in tally.acked.items():
                        if orig.encode() in raw and tally.senders[orig] == user:
                            bounced.update((orig, r) for r in rcpts)
        return all((m, r) in seen or (m, r) in bounced for m, rs in tally.acked.items() for r in rs)

    with contextlib.suppress(AssertionError):  # what is missing is counted below
        wait_for(look, within, "every acknowledged copy delivered or bounced")
    queue = _queued_ids(plan)
    copies = [(m, r) for m, rs in tally.acked.items() for r in rs]
    missing = [c for c in copies if c not in seen and c not in bounced]
    queued = [c for c in missing if c[0] in queue]
    return {
        "acknowledged": len(copies),
        "delivered": sum(1 for c in copies if c in seen),
        "bounced": sum(1 for c in copies if c in bounced and c not in seen),
        "queued": len(queued),
        "lost": len(missing) - len(queued),
        "duplicated": sum(n - 1 for n in seen.values()),
    }


def chaos_run(runtime_name: str, messages: int, seed: int) -> tuple[dict[str, int], Tally]:
    rng = random.Random(seed)
    topo = parse_topology(topology(f"chaos-{runtime_name}"), "chaos.yaml")
    plan, runtime = bring_up(topo, runtime_name, lambda _: None)
    plan = labdir.read_plan(plan.lab)  # with the users' passwords, as clients read them
    tally = Tally()
    try:
        users = [u.address for u in plan.users]
        jobs = [
            (rng.choice(users), rng.sample(users, rng.choice((1, 1, 2))), n)
            for n in range(messages)
        ]
        stop = threading.Event()
        fault = threading.Thread(target=_faults, args=(plan, runtime, stop, tally, rng))
        clients = [
            threading.Thread(target=_submit_until_acked, args=(plan, jobs[i::SUBMITTERS], tally))
            for i in range(SUBMITTERS)
        ]
        fault.start()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        fault.join(FAULTS_AFTER_SUBMISSION)  # kills hit the queues draining too
        stop.set()
        fault.join()
        for node in plan.nodes:
            runtime.start(plan, node)  # whatever the last fault left stopped
        counts = account(plan, tally, within=60)
    finally:
        tear_down(plan.lab, lambda _: None)
    return counts, tally


def _report(counts: dict[str, int], tally: Tally, capsys: pytest.CaptureFixture[str]) -> None:
    """Printed past pytest's capture, so CI's log shows the accounting of every run."""
    with capsys.disabled():
        print(
            "\nchaos accounting: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + f"; {sum(tally.kills.values())} SIGKILLs ({dict(tally.kills)}),"
            f" {tally.resends} client resends"
        )


def prove_exactly_once(
    runtime: str, messages: int, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    counts, tally = chaos_run(runtime, messages, seed)
    _report(counts, tally, capsys)
    assert len(tally.acked) == messages, "a client gave up"
    assert sum(tally.kills.values()) >= 3, "the fault loop hardly ran"
    assert counts["lost"] == 0 and counts["duplicated"] == 0, counts
    assert counts["delivered"] + counts["bounced"] + counts["queued"] == counts["acknowledged"]


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("mxlab_home")
def test_chaos_local_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    prove_exactly_once("local", messages=300, seed=12, capsys=capsys)


@pytest.mark.docker
@pytest.mark.skipif(WHY_NO_DOCKER is not None, reason=WHY_NO_DOCKER or "")
@pytest.mark.timeout(1200)  # the first docker test to run builds the node image
@pytest.mark.usefixtures("mxlab_home")
def test_chaos_docker_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    prove_exactly_once("docker", messages=150, seed=13, capsys=capsys)
