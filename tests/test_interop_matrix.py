"""The interop matrix: every relay kind sends to every relay kind and delivers to every
store kind, and each store kind is read by imapclient and poplib, in one lab
(topologies/mixed.yaml), under docker and on the local runtime where Postfix and
Dovecot are installed (private root instances)."""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import shutil
import smtplib
import time
from collections.abc import Iterator
from itertools import pairwise, product
from pathlib import Path

import pytest
import yaml

import mxlab
from mxlab.lab import kinds
from mxlab.lab.kinds.swap import REAL_SOFTWARE, swap_kinds
from mxlab.lab.mail import tls_context
from mxlab.lab.plan import LabPlan, make_plan, predict_route
from mxlab.lab.scenario import ExpectBounce, ExpectDelivered, Send, load_scenario
from mxlab.lab.topology import load_topology
from tests.conftest import TOPOLOGIES, needs_docker, wait_for

MIXED = TOPOLOGIES / "mixed.yaml"
RELAY_KINDS = {"relay", "postfix"}
STORE_KINDS = {"store", "dovecot"}


def _plan() -> LabPlan:
    """The plan ``mxlab up`` makes here on the local runtime (standard ports as root)."""
    topo = mxlab.validate(MIXED)
    return make_plan(topo, runtime="local", lab_dir=Path("/nonexistent"), privileged=True)


def _kind_at(plan: LabPlan, fqdn: str) -> str:
    node = plan.node_by_fqdn(fqdn)
    assert node is not None, fqdn
    return node.kind


def _covered(plan: LabPlan) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(relay kind, relay kind) and (relay kind, store kind) pairs the lab's mail crosses."""
    relays, stores = set(), set()
    users = [u.address for u in plan.users]
    for sender, rcpt in product(users, users):
        if sender == rcpt:
            continue
        hops = [_kind_at(plan, next(iter(alts))) for alts in predict_route(plan, sender, rcpt)]
        relays |= set(pairwise(hops[:-1]))
        stores.add((hops[-2], hops[-1]))
    return relays, stores


def test_mixed_lab_covers_the_whole_matrix() -> None:
    plan = _plan()
    relays, stores = _covered(plan)
    assert relays == set(product(RELAY_KINDS, RELAY_KINDS))
    assert stores == set(product(RELAY_KINDS, STORE_KINDS))


def _local_problem() -> str | None:
    plan = _plan()
    for node in plan.nodes.values():
        problem = kinds.get(node.kind).local_problem(plan, node)
        if problem is not None:
            return f"{node.kind}: {problem}"
    return None


LOCAL = _local_problem()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("local", marks=pytest.mark.skipif(bool(LOCAL), reason=LOCAL or "")),
        pytest.param("docker", marks=needs_docker),
    ],
)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    mp = pytest.MonkeyPatch()
    mp.setenv("MXLAB_HOME", str(tmp_path_factory.mktemp(f"home-{request.param}")))
    lab = mxlab.Lab.up(MIXED, request.param)
    try:
        yield lab
    finally:
        lab.down()
        mp.undo()


@pytest.fixture(scope="module")
def report(lab: mxlab.Lab) -> mxlab.CheckReport:
    return lab.check(timeout=60)


def test_every_pair_arrives_by_the_planned_route(report: mxlab.CheckReport) -> None:
    """IMAP and POP3 find each message, byte for byte, with the Received: chain the plan
    predicts (Postfix's and Dovecot's headers included)."""
    assert len(report.results) == 12
    bad = [(r.sender, r.rcpt, r.why or r.as_dict()) for r in report.results if not r.ok]
    assert not bad


@pytest.mark.parametrize("address", ["bob@beta.test", "dave@delta.test"])  # dovecot, ours
def test_store_kinds_read_by_imapclient_and_poplib_over_implicit_tls(
    lab: mxlab.Lab, report: mxlab.CheckReport, address: str
) -> None:
    imapclient = pytest.importorskip("imapclient")
    wanted = {r.message_id for r in report.results if r.rcpt == address}
    user = lab.plan.user(address)
    store = lab.plan.nodes[user.store]
    with imapclient.IMAPClient(
        store.address, store.ports["imaps"], ssl=True, ssl_context=tls_context(lab.plan)
    ) as client:
        client.login(address, user.password)
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    got = {
        v[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].split(b":", 1)[1].strip().decode()
        for v in fetched.values()
    }
    assert wanted <= got and len(wanted) == 3
    pop = poplib.POP3_SSL(store.address, store.ports["pop3s"], context=tls_context(lab.plan))
    try:
        pop.user(address)
        pop.pass_(user.password)
        assert pop.stat()[0] == len(got)
    finally:
        pop.quit()


def test_no_password_before_tls_at_postfix_and_dovecot(lab: mxlab.Lab) -> None:
    postfix, dovecot = lab.plan.nodes["mx-beta"], lab.plan.nodes["dovecot-beta"]
    with smtplib.SMTP(postfix.address, postfix.ports["submission"], timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert "starttls" in smtp.esmtp_features and "auth" not in smtp.esmtp_features
    imap = imaplib.IMAP4(dovecot.address, dovecot.ports["imap"], timeout=10)
    try:
        assert "LOGINDISABLED" in imap.capabilities
    finally:
        imap.shutdown()


def test_postfix_submission_keeps_logins_to_their_own_addresses(lab: mxlab.Lab) -> None:
    """Postfix's reject_sender_login_mismatch from the plan: bob may not send as alice."""
    postfix, bob = lab.plan.nodes["mx-beta"], lab.plan.user("bob@beta.test")
    with smtplib.SMTP(postfix.address, postfix.ports["submission"], timeout=10) as smtp:
        smtp.starttls(context=tls_context(lab.plan))
        smtp.login(bob.address, bob.password)
        smtp.mail("alice@alpha.test")
        code, reply = smtp.rcpt("dave@delta.test")
        assert code == 553 and b"not owned by user" in reply, reply


def test_trace_follows_mail_through_postfix_and_dovecot(
    lab: mxlab.Lab, report: mxlab.CheckReport
) -> None:
    """Ours -> Postfix smarthost -> our MX -> our store, and ours -> Postfix MX -> Dovecot:
    every node on the way logs the message, read from each kind's own log, and the
    last one stored it."""
    for sender, rcpt, path in [
        ("carol@gamma.test", "alice@alpha.test", ["mx-gamma", "smarthost", "mx-alpha"]),
        ("alice@alpha.test", "bob@beta.test", ["mx-alpha", "mx-beta"]),
    ]:
        path.append(lab.plan.nodes[lab.plan.user(rcpt).store].name)
        mid = next(r.message_id for r in report.results if (r.sender, r.rcpt) == (sender, rcpt))
        events = lab.trace(mid)
        seen = [(e.node, e.event) for e in events]
        # Postfix stamps its log to the second: the order within a second is not known
        assert {e.node for e in events} == set(path), seen
        assert (path[-1], "delivered") in seen, seen
        # each kind's log stamps read in the right zone (the lab ran in the last minutes)
        assert all(abs(e.ts - time.time()) < 600 for e in events), [e.ts for e in events]


def test_postfix_and_dovecot_nodes_killed_and_started_again(lab: mxlab.Lab) -> None:
    """SIGKILL ends the whole node (Postfix's master too: its ports come free), a start
    brings it back with its queue and mail, and submission AUTH works again."""
    for node in ("mx-beta", "dovecot-beta"):
        lab.kill(node)
        lab.start(node)
    sent = lab.send("dave@delta.test", ["bob@beta.test", "alice@alpha.test"], subject="after")
    assert all(r.ok for r in lab.delivered(sent, timeout=30))


def _expected(path: Path) -> dict[str, int]:
    """The accounting a scenario's own steps promise: each recipient of a message it
    expects delivered counts once as delivered, of one it expects bounced as bounced."""
    scenario, _ = load_scenario(path)
    delivered = {s.id for s in scenario.steps if isinstance(s, ExpectDelivered)}
    bounced = {s.id for s in scenario.steps if isinstance(s, ExpectBounce)}
    tally = {"delivered": 0, "bounced": 0}
    for step in scenario.steps:
        if isinstance(step, Send):
            what = "delivered" if step.id in delivered else "bounced" if step.id in bounced else ""
            if what:
                tally[what] += len(step.to) * step.count
    return tally


def _renamed(scenario: Path, where: Path, lab: str) -> Path:
    """A copy of the scenario whose topology is the same lab under another name."""
    data = yaml.safe_load(scenario.read_text())
    topology = yaml.safe_load((scenario.parent / data["topology"]).read_text())
    (where / "topology.yaml").write_text(yaml.safe_dump(topology | {"name": lab}))
    (where / scenario.name).write_text(yaml.safe_dump(data | {"topology": "topology.yaml"}))
    return where / scenario.name


# the shipped scenarios of mail flow and faults (the mail-authentication ones need our
# relay's SPF/DKIM/DMARC); link faults need docker
_ON_LOCAL = pytest.mark.skipif(bool(LOCAL), reason=LOCAL or "")
SCENARIOS = [
    *(
        pytest.param(name, "local", marks=_ON_LOCAL)
        for name in ("relay-outage", "backup-mx-takeover", "relay-chain", "dns-outage",
                     "unknown-user-bounce", "open-relay")
    ),
    pytest.param("link-faults", "docker", marks=needs_docker),
]  # fmt: skip


@pytest.mark.parametrize(("name", "runtime"), SCENARIOS)
def test_shipped_scenarios_run_with_postfix_and_dovecot(
    name: str, runtime: str, mxlab_home: Path, tmp_path: Path
) -> None:
    """Every relay a Postfix and every store a Dovecot: the same steps pass (faults,
    queued mail read from Postfix's queue, routes, bounces) with the same accounting."""
    path = TOPOLOGIES / f"{name}.scenario.yaml"
    if runtime == "docker":  # container names are the lab's: not another run's two-domains
        path = _renamed(path, tmp_path, "real-software")
    outcome = mxlab.run_scenario(path, runtime, kinds=REAL_SOFTWARE, artifacts=mxlab_home)
    assert outcome.ok, [(s.title, s.detail) for s in outcome.steps if not s.ok]
    assert not outcome.unaccounted
    assert {k: v for k, v in outcome.accounting.items() if v} == {
        k: v for k, v in _expected(path).items() if v
    }


def _postfix_masters() -> list[int]:
    """Postfix masters of any lab: each leaves its node's process group (setsid)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .startswith(b"/usr/lib/postfix/sbin/master")
            ):
                found.append(int(pid))
    return found


@pytest.mark.skipif(bool(LOCAL), reason=LOCAL or "")
def test_gc_ends_every_process_of_an_orphaned_postfix_node(mxlab_home: Path) -> None:
    """A lab whose directory went (a crashed run): gc finds its Postfix and Dovecot nodes
    and ends all their processes, Postfix's master included (their PID namespace)."""
    before = set(_postfix_masters())
    topo = swap_kinds(load_topology(TOPOLOGIES / "two-domains.yaml"), REAL_SOFTWARE)
    lab = mxlab.Lab.up(topo, "local")
    ours = set(_postfix_masters()) - before
    assert len(ours) == 2  # mx-alpha and mx-beta
    shutil.rmtree(lab.directory)
    assert mxlab.gc() == ["two-domains (local)"]
    wait_for(lambda: not ours & set(_postfix_masters()), what="the masters to end")


def test_exec_reaches_postfix_inside_its_node(lab: mxlab.Lab) -> None:
    """`mxlab exec` runs beside the node's software (in its container, or in its
    namespaces on the local runtime): Postfix's own tools see its instance."""
    node = lab.plan.nodes["mx-beta"]
    root = kinds.get("postfix").root(lab.plan, node)  # type: ignore[attr-defined]
    assert lab.exec("mx-beta", ["postfix", "-c", f"{root}/postfix", "status"]) == 0
    assert lab.exec("mx-beta", ["postfix", "-c", f"{root}/nowhere", "status"]) != 0
