"""Run a scenario: fault steps and checks in order, then account for every message."""

from __future__ import annotations

import functools
import shutil
import smtplib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path

from pydantic import BaseModel

from mxlab.lab import dns_faults, kinds
from mxlab.lab.checks import auth_methods, auth_results, split_trace
from mxlab.lab.errors import LabError
from mxlab.lab.lifecycle import bring_up, tear_down
from mxlab.lab.mail import (
    MAIL_ERRORS,
    build_message,
    imap_messages,
    message_id_of,
    pop3_by_message_id,
    smtp_session,
    submit,
)
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime import Runtime
from mxlab.lab.scenario import (
    DnsFault,
    DnsRestore,
    ExpectAuth,
    ExpectBounce,
    ExpectDelivered,
    ExpectDns,
    ExpectQuarantined,
    ExpectQueued,
    ExpectSent,
    ExpectSink,
    Impair,
    NodeStep,
    OpenRelayProbe,
    Reject,
    Scenario,
    Send,
)
from mxlab.lab.sink import node_sink
from mxlab.lab.topology import Topology
from mxlab.nodes.config import RelayNodeConfig

POLL = 0.1


class StepFailed(Exception):
    """What differed from the expectation, in one line."""


@dataclass
class Sent:
    id: str
    sender: str
    rcpts: list[str]
    message_id: str
    data: bytes
    acknowledged: bool  # the relay answered 250: it must be accounted for
    error: str = ""


@dataclass
class StepResult:
    index: int
    title: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Outcome:
    scenario: str
    steps: list[StepResult] = field(default_factory=list)
    accounting: dict[str, int] = field(default_factory=dict)
    unaccounted: list[str] = field(default_factory=list)
    artifacts: str = ""

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.unaccounted


def _title(step: BaseModel) -> str:
    """The step as written: only the fields the scenario set, message text left out."""
    fields = step.model_dump(
        by_alias=True, exclude_defaults=True, exclude={"action", "subject", "body"}
    )
    args = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in fields.items())
    return f"{step.action} {args}".strip()  # type: ignore[attr-defined]


class Runner:
    def __init__(self, scenario: Scenario, plan: LabPlan, runtime: Runtime) -> None:
        self.scenario, self.plan, self.runtime = scenario, plan, runtime
        self.sent: dict[str, list[Sent]] = {}
        self.loads: dict[str, Future[None]] = {}
        self.pool = ThreadPoolExecutor(max_workers=4)

    def _finished(self, sid: str) -> list[Sent]:
        """The messages of a send step, once its background load (if any) is done."""
        if sid in self.loads:
            self.loads.pop(sid).result()
        return self.sent[sid]

    # -- mailbox and queue views -------------------------------------------------------
    def _mailbox(self, address: str) -> list[bytes]:
        return imap_messages(self.plan, address)

    def _is_user(self, address: str) -> bool:
        try:
            self.plan.user(address)
        except KeyError:
            return False
        return True

    def _copies(self, address: str, folder: str = "INBOX") -> dict[str, list[bytes]]:
        """The user's INBOX (or another folder) by lowercased Message-ID."""
        by_id: dict[str, list[bytes]] = {}
        for raw in imap_messages(self.plan, address, folder):
            by_id.setdefault((message_id_of(raw) or "").lower(), []).append(raw)
        return by_id

    def _bounced(self, sent: Sent) -> bool:
        return bool(self._bounces(sent))

    def _bounces(self, sent: Sent) -> list[bytes]:
        """DSNs (RFC 3464 multipart/report) in the sender's INBOX naming the message."""
        found = []
        for raw in self._mailbox(sent.sender):
            msg = message_from_bytes(raw)
            if msg.get_content_type() == "multipart/report" and sent.message_id.encode() in raw:
                found.append(raw)
        return found

    def _queued_at(self, node: str, message_id: str) -> bool:
        """Still to be delivered by that relay (its kind reads its queue)."""
        plan = self.plan.nodes[node]
        return kinds.get(plan.kind).queued(self.plan, plan, message_id)

    def _queued_anywhere(self, message_id: str) -> str | None:
        for name, node in self.plan.nodes.items():
            if node.role == "relay" and self._queued_at(name, message_id):
                return name
        return None

    # -- steps ---------------------------------------------------------------------------
    def run_step(self, step: object) -> str:
        match step:
            case NodeStep(action="stop" | "start" | "kill" | "restart" as act, node=node):
                getattr(self.runtime, act)(self.plan, node)
                return ""
            case NodeStep(action="cut" | "restore" | "clear" as act, node=node):
                self.runtime.link(self.plan, node, act)
                return ""
            case Impair():
                spec = {
                    k: v
                    for k, v in step.__dict__.items()
                    if k in ("delay", "jitter", "loss", "rate") and v
                }
                self.runtime.link(self.plan, step.node, "impair", spec)
                return ""
            case DnsFault():
                dns_faults.fail(self.plan, self.runtime, step.name, step.mode)
                return ""
            case DnsRestore():
                dns_faults.restore(self.plan, self.runtime, step.name)
                return ""
            case Send():
                return self._send(step)
            case ExpectSent():
                return self._poll(
                    step.within,
                    lambda: sum(s.acknowledged for s in self.sent[step.id]) >= step.at_least,
                    f"fewer than {step.at_least} of {step.id} acknowledged",
                )
            case Reject():
                return self._reject(step)
            case ExpectDelivered():
                return self._expect_delivered(step)
            case ExpectBounce():
                return self._expect_bounce(step)
            case ExpectQueued():
                return self._poll(
                    step.within,
                    lambda: all(
                        self._queued_at(step.node, s.message_id) for s in self.sent[step.id]
                    ),
                    f"{step.id} is not queued at {step.node}",
                )
            case ExpectDns():
                return self._expect_dns(step)
            case OpenRelayProbe():
                return self._open_relay(step)
            case ExpectAuth():
                return self._expect_auth(step)
            case ExpectQuarantined():
                return self._expect_quarantined(step)
            case ExpectSink():
                return self._expect_sink(step)
        raise LabError(f"unknown step {step!r}")

    def _expect_sink(self, step: ExpectSink) -> str:
        """Every acknowledged message reached the sink once per transaction, bytes intact
        below the relays' trace headers, for the recipients it was sent to."""
        sink = node_sink(self.plan, step.node)
        acked = [s for s in self._finished(step.id) if s.acknowledged]
        self._poll(
            step.within,
            lambda: all(sink.find(s.message_id) for s in acked),
            f"{step.id} did not reach sink {step.node}",
        )
        for sent in acked:
            copies = sink.find(sent.message_id)  # reads the sink's whole record: once
            for kept in copies:
                if split_trace(kept.data)[1] != sent.data:
                    raise StepFailed(
                        f"{sent.id}: the copy {step.node} kept differs from what was sent"
                    )
                if step.tls is not None and (kept.tls is not None) != step.tls:
                    how = "in plaintext" if step.tls else f"over {kept.tls}"
                    raise StepFailed(f"{sent.id}: {step.node} received it {how} (from {kept.peer})")
            got = {r.lower() for kept in copies for r in kept.rcpt_tos}
            missing = [r for r in sent.rcpts if r.lower() not in got]
            if missing:
                raise StepFailed(f"{sent.id}: {step.node} kept no copy for {missing[0]}")
        return f"kept by {step.node}"

    def _poll(self, within: float, done: Callable[[], bool], failure: str) -> str:
        deadline = time.monotonic() + within
        while True:
            try:
                if done():
                    return ""
            except MAIL_ERRORS:
                pass  # a node may be restarting: poll again
            if time.monotonic() > deadline:
                raise StepFailed(f"{failure} after {within:g}s")
            time.sleep(POLL)

    def _send(self, step: Send) -> str:
        results: list[Sent] = []
        self.sent[step.id] = results

        def one(n: int) -> None:
            sid = step.id if step.count == 1 else f"{step.id}-{n}"
            subject = step.subject or f"scenario {sid}"
            msg = build_message(step.header_from or step.sender, step.to, subject, step.body)
            try:
                data = submit(self.plan, msg, sender=step.sender)
                results.append(Sent(sid, step.sender, step.to, msg["Message-ID"], data, True))
            except MAIL_ERRORS as exc:
                results.append(
                    Sent(sid, step.sender, step.to, msg["Message-ID"], b"", False, str(exc))
                )

        def load() -> None:
            with ThreadPoolExecutor(max_workers=step.concurrency) as pool:
                list(pool.map(one, range(1, step.count + 1)))

        if step.background:
            self.loads[step.id] = self.pool.submit(load)
            return f"{step.count} messages started in the background"
        load()
        acked = sum(s.acknowledged for s in results)
        if step.count == 1 and not acked:
            raise StepFailed(f"submission refused: {results[0].error}")
        return f"{acked}/{step.count} acknowledged"

    def _reject(self, step: Reject) -> str:
        user = self.plan.user(step.sender) if step.auth else None
        relay = self.plan.nodes[step.node or self.plan.user(step.sender).submission]
        with smtp_session(self.plan, relay.name, "submission" if step.auth else "smtp") as smtp:
            if user is not None:
                smtp.login(user.address, user.password)
            code, reply = smtp.mail(step.sender)
            if code < 400:
                code, reply = smtp.rcpt(step.to)
            if code < 400:
                code, reply = smtp.data(b"Subject: expect reject\r\n\r\nbody\r\n")
        text = reply.decode(errors="replace")
        if code != step.code:
            raise StepFailed(f"expected {step.code}, got {code} {text}")
        return f"{code} {text}"

    def _expect_delivered(self, step: ExpectDelivered) -> str:
        acked = [s for s in self._finished(step.id) if s.acknowledged]
        rcpts = sorted({r for s in acked for r in s.rcpts})
        boxes: dict[str, dict[str, list[bytes]]] = {}

        def arrived() -> bool:
            for rcpt in rcpts:
                boxes[rcpt] = self._copies(rcpt)
            return all(s.message_id.lower() in boxes[r] for s in acked for r in s.rcpts)

        self._poll(step.within, arrived, f"{step.id} not delivered to every recipient")
        routes = set()
        for sent in acked:
            for rcpt in sent.rcpts:
                copies = boxes[rcpt][sent.message_id.lower()]
                if len(copies) != 1:
                    raise StepFailed(f"{sent.id} delivered {len(copies)} times to {rcpt}")
                hops, body = split_trace(copies[0])
                if body != sent.data:
                    raise StepFailed(f"{sent.id}: {rcpt}'s copy differs from what was sent")
                if step.route is not None and hops != step.route:
                    got, want = " > ".join(hops), " > ".join(step.route)
                    raise StepFailed(f"{sent.id} took {got}, expected {want}")
                routes.add(" > ".join(hops))
        if step.by in ("pop3", "both"):
            for rcpt in rcpts:
                ids = [s.message_id for s in acked if rcpt in s.rcpts]
                missing = len(ids) - len(pop3_by_message_id(self.plan, rcpt, ids))
                if missing:
                    raise StepFailed(f"{missing} of {step.id} not visible by POP3 for {rcpt}")
        summary = routes.pop() if len(routes) == 1 else f"{len(routes)} routes"
        return f"{len(acked)} delivered once each; {summary}"

    def _expect_bounce(self, step: ExpectBounce) -> str:
        for sent in self._finished(step.id):
            if sent.acknowledged:
                self._poll(
                    step.within,
                    functools.partial(self._bounced, sent),
                    f"no bounce for {step.id} reached {sent.sender}",
                )
                status = step.status
                if status is not None and not any(
                    status.encode() in b for b in self._bounces(sent)
                ):
                    raise StepFailed(f"the bounce for {step.id} does not say {status}")
        return "bounce received" + (f" ({step.status})" if step.status else "")

    # -- mail authentication -------------------------------------------------------------
    def _final(self, rcpt: str) -> list[str]:
        """The mailboxes mail to ``rcpt`` ends in, the lab's forwards followed."""
        targets = self.plan.forwards.get(rcpt.lower()) or next(
            (t for a, t in self.plan.forwards.items() if a.lower() == rcpt.lower()), None
        )
        if targets is None:
            return [rcpt]
        return [m for t in targets for m in self._final(t)]

    def _copy_in(self, step: ExpectAuth | ExpectQuarantined, folders: tuple[str, ...]) -> bytes:
        """The one copy of the message in the recipient's ``folders``, once it is there."""
        sent = next(s for s in self._finished(step.id) if s.acknowledged)
        rcpt = step.rcpt or self._final(sent.rcpts[0])[0]
        found: list[bytes] = []

        def arrived() -> bool:
            found[:] = [
                raw
                for folder in folders
                for raw in self._copies(rcpt, folder).get(sent.message_id.lower(), [])
            ]
            return bool(found)

        self._poll(step.within, arrived, f"{step.id} not in {rcpt}'s {' or '.join(folders)}")
        return found[0]

    def _expect_auth(self, step: ExpectAuth) -> str:
        header = auth_results(self._copy_in(step, ("INBOX", "Junk")))
        if header is None:
            raise StepFailed(f"{step.id}: the delivered copy has no Authentication-Results")
        got = auth_methods(header)
        for method in ("spf", "dkim", "dmarc", "arc"):
            want = getattr(step, method)
            if want is not None and want not in got.get(method, ["none"]):
                raise StepFailed(f"{step.id}: {method}={want} expected; got {header}")
        return header

    def _expect_quarantined(self, step: ExpectQuarantined) -> str:
        raw = self._copy_in(step, ("Junk",))
        sent = next(s for s in self._finished(step.id) if s.acknowledged)
        rcpt = step.rcpt or self._final(sent.rcpts[0])[0]
        if sent.message_id.lower() in self._copies(rcpt):
            raise StepFailed(f"{step.id} is in {rcpt}'s INBOX too")
        return f"in {rcpt}'s Junk: {auth_results(raw)}"

    def _expect_dns(self, step: ExpectDns) -> str:
        rcode, got = dns_faults.ask(self.plan, step.name, step.type)
        if rcode == "TIMEOUT" and step.rcode != "TIMEOUT":
            raise StepFailed(f"{step.name} {step.type}: no answer")
        if rcode != step.rcode or (rcode != "TIMEOUT" and got != sorted(step.answer)):
            want = f"{step.rcode} {sorted(step.answer)}"
            raise StepFailed(f"{step.name} {step.type}: got {rcode} {got}, expected {want}")
        return f"{rcode} {got}"

    def _open_relay(self, step: OpenRelayProbe) -> str:
        """RFC 5321 §7.1 / Postfix's checks: every unauthenticated foreign relay attempt
        must be refused, however the address is dressed up."""
        relay = self.plan.nodes[step.node]
        config = relay.config
        assert isinstance(config, RelayNodeConfig)  # the scenario's validation made sure
        local = next(iter(config.local_domains or config.relay_domains or {"x.test": 0}))
        probes = [
            "victim@outside.example",
            f"victim%outside.example@{local}",
            f"@{local}:victim@outside.example",
            f'"victim@outside.example"@{local}',
            f"victim@outside.example@{local}",
            f"outside.example!victim@{local}",
        ]
        accepted = []
        for rcpt in probes:
            with smtplib.SMTP(relay.address, relay.ports["smtp"], timeout=10) as smtp:
                smtp.ehlo("probe.outside.example")
                smtp.mail("spammer@outside.example")
                code, _ = smtp.rcpt(rcpt)
                if code < 400:
                    accepted.append(rcpt)
        if accepted:
            raise StepFailed(f"open relay: accepted {', '.join(accepted)}")
        return f"{len(probes)} probes refused"

    # -- accounting ----------------------------------------------------------------------
    def _sink_copies(self) -> set[tuple[str, str]]:
        """(Message-ID, recipient) of everything the lab's sink nodes kept."""
        return {
            (m.message_id.lower(), r.lower())
            for n in self.plan.nodes.values()
            if n.kind == "sink"
            for m in node_sink(self.plan, n.name).messages()
            for r in m.rcpt_tos
        }

    def _leaves(self, rcpt: str) -> bool:
        """Mail for ``rcpt`` is handed to a server outside the lab: its domain's MX or
        the next hop of the relays it passes is an external node."""
        domain = self.plan.domains.get(rcpt.rpartition("@")[2].lower())
        if domain is not None:
            return self.plan.nodes[domain.mx[0][1]].kind == "external"
        outside = {n.address for n in self.plan.nodes.values() if n.kind == "external"}
        return any(
            isinstance(n.config, RelayNodeConfig)
            and n.config.next_hop is not None
            and n.config.next_hop.host in outside
            for n in self.plan.nodes.values()
        )

    def account(self, outcome: Outcome) -> None:
        """Every acknowledged message: delivered exactly once to each recipient, bounced
        to its sender, or still queued somewhere — anything else fails the run."""
        tally = {"delivered": 0, "bounced": 0, "queued": 0, "not acknowledged": 0, "duplicated": 0}
        tally["quarantined"] = 0
        kept = self._sink_copies()
        boxes: dict[str, dict[str, list[bytes]]] = {}
        junk: dict[str, dict[str, list[bytes]]] = {}
        for sid in list(self.loads):
            self._finished(sid)
        for sends in self.sent.values():
            for sent in sends:
                if not sent.acknowledged:
                    tally["not acknowledged"] += 1
                for rcpt in [m for r in sent.rcpts for m in self._final(r)]:  # forwards followed
                    if rcpt not in boxes:  # no mailbox for a non-user: it can only bounce
                        user = self._is_user(rcpt)
                        boxes[rcpt] = self._copies(rcpt) if user else {}
                        junk[rcpt] = self._copies(rcpt, "Junk") if user else {}
                    copies = len(boxes[rcpt].get(sent.message_id.lower(), []))
                    if not copies and sent.message_id.lower() in junk[rcpt]:
                        tally["quarantined"] += 1  # DMARC p=quarantine
                    elif copies == 1:
                        tally["delivered"] += 1
                    elif copies > 1:
                        tally["duplicated"] += 1
                        outcome.unaccounted.append(f"{sent.id} delivered {copies}x to {rcpt}")
                    elif not sent.acknowledged:
                        continue
                    elif (sent.message_id.lower(), rcpt.lower()) in kept:
                        tally["kept by a sink"] = tally.get("kept by a sink", 0) + 1
                    elif self._bounces(sent):
                        tally["bounced"] += 1
                    elif self._queued_anywhere(sent.message_id) is not None:
                        tally["queued"] += 1
                    elif self._leaves(rcpt):
                        tally["left the lab"] = tally.get("left the lab", 0) + 1  # external
                    else:
                        outcome.unaccounted.append(f"{sent.id} to {rcpt}: lost")
        outcome.accounting = tally


def run_scenario(
    scenario: Scenario,
    topo: Topology,
    runtime_name: str | None,
    progress: Callable[[str], None],
    artifacts_root: Path,
) -> Outcome:
    """Bring the lab up, run the scenario on it, keep artifacts if it failed, tear down."""
    plan, runtime = bring_up(topo, runtime_name or scenario.runtime, progress)
    try:
        outcome = run_steps(scenario, plan, runtime, progress)
        if not outcome.ok:
            outcome.artifacts = str(save_artifacts(plan, runtime, artifacts_root))
    finally:
        tear_down(plan.lab, progress)
    return outcome


def run_steps(
    scenario: Scenario, plan: LabPlan, runtime: Runtime, progress: Callable[[str], None]
) -> Outcome:
    """Run steps in order on a running lab, stop at the first failure, then account for
    every message the steps submitted."""
    runner = Runner(scenario, plan, runtime)
    outcome = Outcome(scenario.name)
    try:
        for i, step in enumerate(scenario.steps, 1):
            title = _title(step)
            started = time.monotonic()
            try:
                detail, ok = runner.run_step(step), True
            except StepFailed as exc:
                detail, ok = str(exc), False
            except MAIL_ERRORS as exc:
                detail, ok = f"{type(exc).__name__}: {exc}", False
            except LabError as exc:
                detail, ok = f"{type(exc).__name__}: {exc}", False
            took = time.monotonic() - started
            outcome.steps.append(StepResult(i, title, ok, took, detail))
            mark = "ok" if ok else "FAILED"
            progress(f"[{i}/{len(scenario.steps)}] {title}: {mark} ({took:.1f}s) {detail}")
            if not ok:
                break
        runner.account(outcome)
    finally:
        runner.pool.shutdown(wait=True, cancel_futures=True)
    return outcome


def save_artifacts(plan: LabPlan, runtime: Runtime, root: Path) -> Path:
    """Logs, queues and generated configs of a failed run, for the CI to keep."""
    dest = root / f"{plan.lab}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(
        plan.lab_dir, dest, ignore=shutil.ignore_patterns("*.key", "key.pem", "secrets.json", "pid")
    )
    for name in plan.nodes:
        (dest / "nodes" / name).mkdir(parents=True, exist_ok=True)
        (dest / "nodes" / name / "runtime.log").write_bytes(runtime.log_bytes(plan, name))
    return dest
