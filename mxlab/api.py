"""The Python API: the one way into a lab. The CLI, the pytest plugin and the dashboard
are thin layers over it.

    import mxlab

    with mxlab.Lab.up("topologies/two-domains.yaml", runtime="local") as lab:
        lab.send("alice@alpha.test", ["bob@beta.test"], subject="hi")
        msg = lab.mailbox("bob@beta.test").wait_for(subject="hi", timeout=30)
        lab.kill("mx-beta")

Everything returns plain data: tuples, dicts, dataclasses and ``EmailMessage`` objects.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import yaml

from mxlab.lab import dns_faults, labdir, lifecycle, mail, queues
from mxlab.lab.checks import Result, check_pairs, choose_pairs, collect
from mxlab.lab.errors import LabError
from mxlab.lab.plan import LabPlan, predict_route
from mxlab.lab.runtime import NodeStatus, Progress, Runtime
from mxlab.lab.sink import Sink, node_sink
from mxlab.lab.topology import Topology, load_topology, parse_topology
from mxlab.lab.trace import Event, events_for, events_since

__all__ = [
    "CheckReport",
    "Lab",
    "Mailbox",
    "SendRefused",
    "Sent",
    "User",
    "build_image",
    "down",
    "gc",
    "labelled",
    "labs",
    "preview",
    "run_scenario",
    "validate",
]

Port = Literal["smtp", "submission", "imap", "pop3", "lmtp", "dns"]
POLL = 0.1


def _quiet(line: str) -> None:
    """Progress goes nowhere unless the caller asks for it."""


@dataclass(frozen=True)
class User:
    """A lab user: log in with the full address (as Dovecot and Postfix expect)."""

    address: str
    password: str
    domain: str
    submission: str  # the relay node taking this user's outgoing mail
    store: str  # the store node holding the mailbox


@dataclass(frozen=True)
class Sent:
    """A message the lab acknowledged (250): what it accepted, for whom."""

    message_id: str
    sender: str
    recipients: list[str]
    data: bytes
    submitted_at: float  # time.monotonic() at the 250


class SendRefused(LabError):
    """The relay refused the submission; ``code`` and ``reply`` are its SMTP answer."""

    def __init__(self, code: int, reply: str, what: str) -> None:
        self.code, self.reply = code, reply
        super().__init__(f"{what}: refused with {code} {reply}")


@dataclass
class CheckReport:
    """Every pair of users mailed each other; plus the topology's declared checks."""

    results: list[Result]
    declared: Any = None  # a scenario Outcome, when the topology declares checks
    sampled: int = 0  # k when each domain mailed k others only (0: every pair of users)

    @property
    def ok(self) -> bool:
        declared_ok = self.declared is None or self.declared.ok
        return bool(self.results) and all(r.ok for r in self.results) and declared_ok


def validate(topology: str | Path | dict[str, Any] | Topology) -> Topology:
    """The topology, validated: a mistake raises ``TopologyError`` (one line: file,
    field, fix)."""
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, dict):
        return parse_topology(yaml.safe_dump(topology), "<dict>")
    return load_topology(topology)


def preview(topology: str | Path | dict[str, Any] | Topology) -> LabPlan:
    """The plan a topology gets on the local runtime, without starting anything: what
    ``mxlab graph`` and ``mxlab explain`` show for a file."""
    from mxlab.lab.plan import make_plan

    topo = validate(topology)
    return make_plan(topo, runtime="local", lab_dir=labdir.lab_dir(topo.name))


def labs() -> list[str]:
    """The labs of this ``MXLAB_HOME`` that have a running node."""
    return lifecycle.running_labs(_quiet)


def down(name: str | None = None, keep: bool = False, progress: Progress = _quiet) -> str:
    """Bring a lab down by name (the only one up when ``None``), even one whose directory
    is gone; ``keep`` leaves its directory. Returns the lab's name."""
    name = lifecycle.resolve(name, progress)
    lifecycle.tear_down(name, progress, keep=keep)
    return name


def labelled(name: str | None = None) -> dict[str, list[NodeStatus]]:
    """Docker labs of this ``MXLAB_HOME`` as the engine's labels tell them (no files
    needed): lab -> node statuses."""
    return lifecycle.labelled(name)


def gc(progress: Progress = _quiet) -> list[str]:
    """Remove what crashed runs left: orphaned node processes, dead docker labs."""
    return lifecycle.gc(progress)


def build_image(force: bool = False, progress: Progress = _quiet) -> str:
    """Build the node image (offline where no registry answers); return its tag."""
    return lifecycle.build_image(force, progress)


class Lab:
    """A running lab. Make one with :meth:`up` or :meth:`attach`; use it as a context
    manager to have it brought down at the end."""

    def __init__(self, plan: LabPlan, runtime: Runtime, progress: Progress = _quiet) -> None:
        self.plan, self._runtime, self._progress = plan, runtime, progress

    # -- life ------------------------------------------------------------------------
    @classmethod
    def up(
        cls,
        topology: str | Path | dict[str, Any] | Topology,
        runtime: str = "auto",
        *,
        name: str | None = None,
        progress: Progress = _quiet,
        inventory: str | Path | None = None,
    ) -> Lab:
        """Start a lab from a topology (file, dict or ``Topology``) and wait until every
        node answers. ``runtime``: "local", "docker", "swarm", "hosts" (nodes on the
        machines of the Ansible ``inventory``) or "auto" (docker where an engine
        answers). ``name`` overrides the topology's lab name (parallel test workers)."""
        topo = validate(topology)
        if name is not None:
            topo = topo.model_copy(update={"name": name})
        where = Path(inventory) if inventory is not None else None
        plan, rt = lifecycle.bring_up(topo, runtime, progress, where)
        return cls(plan, rt, progress)

    @classmethod
    def attach(cls, name: str | None = None, progress: Progress = _quiet) -> Lab:
        """A lab already up (by name; the only running one when ``None``)."""
        plan = labdir.read_plan(lifecycle.resolve(name, progress))
        return cls(plan, lifecycle.runtime_of(plan, progress), progress)

    def down(self, keep: bool = False) -> None:
        """Stop every node and remove the lab directory (``keep``: leave it to inspect)."""
        down(self.name, keep, self._progress)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def __repr__(self) -> str:
        return f"<Lab {self.name} ({self.plan.runtime}, {self.plan.subnet})>"

    @property
    def name(self) -> str:
        return self.plan.lab

    @property
    def directory(self) -> Path:
        """Where the lab keeps its plan, zones, configs, state and logs."""
        return Path(self.plan.lab_dir)

    @property
    def ca_file(self) -> Path:
        """The lab CA certificate: trust it to verify every node's TLS."""
        return self.directory / "ca" / "ca.pem"

    def status(self) -> list[NodeStatus]:
        return self._runtime.status(self.name)

    # -- addresses and users ---------------------------------------------------------
    def _node(self, node: str) -> str:
        if node not in self.plan.nodes:
            nodes = ", ".join(self.plan.nodes)
            raise LabError(f"lab {self.name} has no node {node!r} ({nodes})")
        return node

    def endpoint(self, node: str, port: Port) -> tuple[str, int]:
        """(host, port) where a client reaches a node's service."""
        n = self.plan.nodes[self._node(node)]
        if port not in n.ports:
            raise LabError(f"{node} serves {', '.join(n.ports)}, not {port}")
        return n.address, n.ports[port]

    def smtp(self, domain: str, port: Port = "submission") -> tuple[str, int]:
        """(host, port) of the domain's submission relay ("submission") or its best MX
        ("smtp")."""
        try:
            plan = self.plan.domains[domain.lower()]
        except KeyError:
            raise LabError(f"{domain} is not a domain of lab {self.name}") from None
        node = plan.submission if port == "submission" else plan.mx[0][1]
        return self.endpoint(node, port)

    def imap(self, address: str) -> tuple[str, int]:
        return self.endpoint(self.user(address).store, "imap")

    def pop3(self, address: str) -> tuple[str, int]:
        return self.endpoint(self.user(address).store, "pop3")

    def user(self, address: str) -> User:
        try:
            u = self.plan.user(address)
        except KeyError:
            raise LabError(f"{address} is not a user of lab {self.name}") from None
        return User(u.address, u.password, u.domain, u.submission, u.store)

    @property
    def users(self) -> list[User]:
        return [self.user(u.address) for u in self.plan.users]

    def hosts(self) -> str:
        """/etc/hosts lines for every node, so host-side clients (fetchmail, mbsync,
        mutt) reach nodes by the names their certificates carry."""
        return "".join(f"{n.address}\t{n.fqdn}\n" for n in self.plan.nodes.values())

    # -- mail ------------------------------------------------------------------------
    def send(
        self,
        sender: str,
        to: Iterable[str],
        subject: str = "mxlab test message",
        body: str = "Hello from mxlab.\n",
        *,
        attachments: Iterable[Path] = (),
        headers: dict[str, str] | None = None,
    ) -> Sent:
        """Submit as a lab user (587, STARTTLS, AUTH); return once the relay said 250."""
        rcpts = list(to)
        self.user(sender)
        if not rcpts:
            raise LabError("a message needs at least one recipient")
        for path in attachments:
            if not Path(path).is_file():
                raise LabError(f"attachment {path}: no such file")
        try:
            msg = mail.build_message(sender, rcpts, subject, body, attachments, headers)
            data = msg.as_bytes()
        except (ValueError, TypeError) as exc:  # header injection, malformed address
            raise LabError(f"cannot build the message: {exc}") from None
        import smtplib

        try:
            mail.submit(self.plan, msg, sender=sender, rcpts=rcpts)
        except smtplib.SMTPRecipientsRefused as exc:
            address, (code, reply) = next(iter(exc.recipients.items()))
            raise SendRefused(code, _text(reply), f"RCPT {address}") from None
        except smtplib.SMTPResponseException as exc:
            raise SendRefused(
                exc.smtp_code, _text(exc.smtp_error), f"submission as {sender}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise LabError(f"submission as {sender} failed: {exc} (is the lab up?)") from None
        return Sent(str(msg["Message-ID"]), sender, rcpts, data, time.monotonic())

    def delivered(self, sent: Sent, timeout: float = 30.0) -> list[Result]:
        """Wait for each lab recipient's copy and judge it on its own: fetched by IMAP and
        POP3, byte for byte what was sent, along the route the plan predicts."""
        lab_users = {u.address.lower() for u in self.plan.users}
        results = [
            Result(sent.sender, r, sent.message_id,
                   [sorted(a) for a in predict_route(self.plan, sent.sender, r)])
            for r in sent.recipients
            if r.lower() in lab_users
        ]  # fmt: skip
        at = {sent.message_id: sent.submitted_at}
        collect(self.plan, results, {sent.message_id: sent.data}, at, time.monotonic() + timeout)
        return results

    def sink(self, node: str) -> Sink:
        """What the sink node ``node`` kept: ``.messages()``, ``.wait_for(message_id)``."""
        return node_sink(self.plan, self._node(node))

    def mailbox(self, address: str) -> Mailbox:
        self.user(address)
        return Mailbox(self.plan, address)

    # -- the relays' queues ----------------------------------------------------------
    def queue(self, node: str | None = None) -> list[dict[str, Any]]:
        """Every queued message of one relay or all: id, state, age, recipients..."""
        replies = self.queue_action("list", node=node)
        now = time.time()
        return [queues.as_dict(n, e, now) for n, r in replies.items() for e in r.messages]

    def queue_action(
        self,
        action: Literal["list", "flush", "hold", "release", "delete"],
        ids: list[str] | None = None,
        node: str | None = None,
    ) -> dict[str, Any]:
        """Carry a queue action out on each relay (or one); replies by node."""
        from mxlab.nodes.relay.queue_admin import Request

        nodes = queues.relays_of(self.plan, node)
        return queues.ask_relays(self.plan, self._runtime, nodes, Request(action=action, ids=ids))

    # -- following a message ---------------------------------------------------------
    def trace(self, message_id: str) -> list[Event]:
        """Every node's log events about the message, oldest first."""
        return events_for(self.plan, self._runtime, message_id)

    def events(self, since: float = 0.0) -> list[Event]:
        """Every node's log events since ``since`` (a ``time.time()``), oldest first: what
        the lab did during one test, for a failure report."""
        return events_since(self.plan, self._runtime, since)

    def log(self, node: str) -> bytes:
        return self._runtime.log_bytes(self.plan, self._node(node))

    def follow_log(self, node: str) -> None:
        """Copy the node's log to stdout and keep following it."""
        self._runtime.logs(self.plan, self._node(node), follow=True)

    def exec(self, node: str, argv: list[str]) -> int:
        """Run a command in the node (its container, or its folder on the local runtime)."""
        return self._runtime.exec(self.plan, self._node(node), argv)

    def zones(self) -> str:
        """The lab's zones in BIND format."""
        from mxlab.dns.zonefile import render_zone

        return "".join(render_zone(z) + "\n" for z in self.plan.zones)

    def dns(self, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
        """Ask the lab's DNS: (rcode or "TIMEOUT", sorted answers)."""
        return dns_faults.ask(self.plan, name, rdtype)

    def graph(self) -> Any:
        """The lab's drawing (a ``mxlab.lab.graph.Graph``: render it as Mermaid, DOT, SVG
        or HTML) with each node's state and each relay's queue size."""
        from mxlab.lab import graph

        states = {s.node: s.state for s in self.status()}
        sizes = {n.name: 0 for n in self.plan.nodes.values() if n.role == "relay"}
        for entry in self.queue():
            sizes[str(entry["node"])] += 1
        return graph.build(self.plan, states, sizes)

    def dns_add(self, name: str, rdtype: str, value: str, ttl: int = 300) -> None:
        """Add a record to the running lab's DNS (our DNS node reloads it on SIGHUP)."""
        self.dns_change(add=[(name, rdtype, value)], ttl=ttl)

    def dns_remove(self, name: str, rdtype: str, value: str | None = None) -> None:
        """Remove a record (every one of that name and type when ``value`` is None)."""
        self.dns_change(remove=[(name, rdtype, value)])

    def dns_change(
        self,
        add: Iterable[tuple[str, str, str]] = (),
        remove: Iterable[tuple[str, str, str | None]] = (),
        ttl: int = 300,
    ) -> None:
        """Remove, then add records in one step; a change the DNS node would refuse
        (a CNAME beside other data...) raises ``LabError`` and changes nothing."""
        from mxlab.lab import records

        new = records.edited(self.plan, list(add), list(remove), ttl)
        records.apply(self.plan, self._runtime, new)
        self.plan = new

    def cert_check(self, node: str) -> tuple[bool, str]:
        """(trusted, why): the node's TLS certificate as a client trusting the lab CA
        sees it."""
        from mxlab.lab import certs

        return certs.verify(self.plan, self._node(node))

    def cert_valid_until(self, node: str) -> float:
        """When the node's certificate expires (a ``time.time()`` timestamp)."""
        from mxlab.lab import certs

        return certs.valid_until(self.plan, self._node(node))

    def cert_renew(self, node: str, *, expired: bool = False) -> None:
        """Reissue the node's certificate from the lab CA and restart it (``expired``:
        one that expired yesterday, to break a lab on purpose)."""
        from mxlab.lab import certs

        certs.reissue(self.plan, self._runtime, self._node(node), expired)

    def shell(self, node: str) -> int:
        """An interactive shell in the node: in its container (the docker CLI's
        ``exec -it``), or in its folder with the node's environment (local runtime)."""
        import os
        import shutil
        import subprocess

        self._node(node)
        if self.plan.runtime != "docker":
            return self.exec(node, [os.environ.get("SHELL") or "/bin/sh"])
        from mxlab.lab.runtime.docker import container_name

        docker = shutil.which("docker")
        if docker is None:
            raise LabError("a shell in a container needs the docker CLI; or use mxlab exec")
        return subprocess.call([docker, "exec", "-it", container_name(self.name, node), "sh"])

    # -- changing the lab while it runs ---------------------------------------------
    def inventory(self) -> dict[str, Any]:
        """The lab as an Ansible inventory (YAML structure): groups dns, relays, stores and
        one per domain; each node's address, FQDN, ports, role, domains and connection."""
        from mxlab.lab.inventory import inventory

        return inventory(self.plan)

    def topology(self) -> dict[str, Any]:
        """The topology the running lab was planned from, as data (with passwords)."""
        from mxlab.lab import live

        return live.topology(self.plan)

    def reconfigure(
        self,
        topology: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]],
        *,
        dry_run: bool = False,
    ) -> list[str]:
        """Put an edited ``topology()`` in force without a restart - or a function that
        edits it, given the lab's topology as it is at that moment. The lab is planned
        again (every node keeps its address), our nodes whose config changed reload it
        (SIGHUP); other kinds (Postfix, NSD...) restart. Returns the nodes
        that change ([]: nothing to do); ``dry_run`` only says which."""
        from mxlab.lab import live

        edit = topology if callable(topology) else lambda _: topology
        new, changed = live.change(self.plan, self._runtime, edit, dry_run)
        if not dry_run:
            self.plan = new
        return changed

    def add_user(self, address: str, password: str, *, dry_run: bool = False) -> list[str]:
        """A new user of one of the lab's domains, who can log in and receive mail at once."""
        from mxlab.lab import live

        if address.lower() in {u.address.lower() for u in self.plan.users}:
            raise LabError(f"{address} is already a user of lab {self.name}")
        return self.reconfigure(lambda t: live.with_user(t, address, password), dry_run=dry_run)

    def set_password(self, address: str, password: str, *, dry_run: bool = False) -> list[str]:
        from mxlab.lab import live

        self.user(address)
        return self.reconfigure(lambda t: live.with_user(t, address, password), dry_run=dry_run)

    def remove_user(self, address: str, *, dry_run: bool = False) -> list[str]:
        """The user can no longer log in or receive mail (the mailbox stays on disk)."""
        from mxlab.lab import live

        self.user(address)
        return self.reconfigure(lambda t: live.without_user(t, address), dry_run=dry_run)

    def add_domain(
        self,
        domain: str,
        *,
        store: str,
        mx: dict[str, int],
        users: dict[str, str],
        submission: str | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """A new domain served by existing nodes: ``mx`` (relay -> preference), ``users``
        (local part -> password). Its zone, the relays' routing and the store follow."""
        from mxlab.lab import live

        if domain.lower() in self.plan.domains:
            raise LabError(f"{domain} is already a domain of lab {self.name}")
        return self.reconfigure(
            lambda t: live.with_domain(t, domain, store, mx, users, submission), dry_run=dry_run
        )

    def set_mx(self, domain: str, mx: dict[str, int], *, dry_run: bool = False) -> list[str]:
        """The domain's MX hosts and preferences (relay -> preference), as a whole."""
        from mxlab.lab import live

        return self.reconfigure(lambda t: live.with_mx(t, domain, mx), dry_run=dry_run)

    # -- faults ----------------------------------------------------------------------
    def start(self, node: str) -> None:
        self._runtime.start(self.plan, self._node(node))

    def stop(self, node: str) -> None:
        self._runtime.stop(self.plan, self._node(node))

    def kill(self, node: str) -> None:
        """SIGKILL: what the node acknowledged must survive it."""
        self._runtime.kill(self.plan, self._node(node))

    def restart(self, node: str) -> None:
        self._runtime.restart(self.plan, self._node(node))

    def cut(self, node: str) -> None:
        """Take the node off the lab network (docker)."""
        self._runtime.link(self.plan, self._node(node), "cut")

    def restore(self, node: str) -> None:
        self._runtime.link(self.plan, self._node(node), "restore")

    def impair(self, node: str, **spec: str) -> None:
        """delay=, jitter=, loss=, rate= on the node's link (docker)."""
        self._runtime.link(self.plan, self._node(node), "impair", spec)

    def clear(self, node: str) -> None:
        self._runtime.link(self.plan, self._node(node), "clear")

    def dns_fail(self, name: str, mode: str = "servfail") -> None:
        """Make a name fail in the lab DNS: servfail, timeout or drop_mx."""
        dns_faults.fail(self.plan, self._runtime, name, mode)

    def dns_faults(self) -> dict[str, list[str]]:
        """The DNS faults in force, by mode: {"servfail": [...], "timeout": [...], ...}."""
        faults = dns_faults.current(self.plan)
        return {mode: sorted(getattr(faults, mode)) for mode in dns_faults.MODES}

    def dns_restore(self, name: str | None = None) -> list[str]:
        """Lift DNS faults (all, or one name's); return the names still failing."""
        dns_faults.restore(self.plan, self._runtime, name)
        left = dns_faults.current(self.plan)
        return sorted(left.servfail | left.timeout | left.drop_mx)

    # -- proof -----------------------------------------------------------------------
    def check(self, timeout: float = 60.0, sample: int | None = None) -> CheckReport:
        """Mail between every ordered pair of users, fetched back by IMAP and POP3 and
        compared byte for byte and hop by hop; then the topology's declared checks.

        A big lab (more than checks.FULL_PAIRS_MAX pairs), or ``sample=k``, mails each
        domain to k others instead (``sample=0``: every pair whatever the size)."""
        pairs, k = choose_pairs(self.plan, sample)
        results = check_pairs(self.plan, deadline=timeout, pairs=pairs)
        declared = self.run_checks(self.plan.checks) if self.plan.checks else None
        return CheckReport(results, declared, sampled=k)

    def run_checks(self, steps: list[Any]) -> Any:
        """Scenario check steps (``{"expect_no_open_relay": {"node": "mx-beta"}}``...)
        run on the lab as it is; returns the scenario ``Outcome`` (``.ok``, ``.steps``)."""
        from mxlab.lab.scenario import checks_scenario
        from mxlab.lab.scenario_run import run_steps

        scenario = checks_scenario(self.name, steps)
        return run_steps(scenario, self.plan, self._runtime, self._progress)


class Mailbox:
    """A user's mailbox, read over IMAP (STARTTLS) like any client would."""

    def __init__(self, plan: LabPlan, address: str) -> None:
        self._plan, self.address = plan, address

    def raw(self, folder: str = "INBOX") -> list[bytes]:
        return mail.imap_messages(self._plan, self.address, folder)

    def messages(self, folder: str = "INBOX") -> list[EmailMessage]:
        return [_parse(raw) for raw in self.raw(folder)]

    def wait_for(
        self,
        subject: str | None = None,
        header: tuple[str, str] | None = None,
        message_id: str | None = None,
        timeout: float = 30.0,
        folder: str = "INBOX",
    ) -> EmailMessage:
        """The first message matching every criterion given; polls until ``timeout``,
        then raises ``LabError`` naming what the mailbox held instead."""
        wanted = _matcher(subject, header, message_id)
        deadline = time.monotonic() + timeout
        held: list[EmailMessage] = []
        while True:
            with contextlib.suppress(*mail.MAIL_ERRORS):  # the store may be restarting
                held = self.messages(folder)
            for msg in held:
                if wanted(msg):
                    return msg
            if time.monotonic() > deadline:
                subjects = ", ".join(repr(str(m["Subject"])) for m in held) or "nothing"
                raise LabError(
                    f"{self.address}: no message like {_describe(subject, header, message_id)}"
                    f" within {timeout:g}s; {folder} held {subjects}"
                )
            time.sleep(POLL)


def _text(reply: bytes | str) -> str:
    """An SMTP reply text as smtplib hands it over (bytes, or str for its own errors)."""
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _matcher(
    subject: str | None, header: tuple[str, str] | None, message_id: str | None
) -> Callable[[EmailMessage], bool]:
    def match(msg: EmailMessage) -> bool:
        if subject is not None and str(msg["Subject"]) != subject:
            return False
        if header is not None and str(msg[header[0]] or "") != header[1]:
            return False
        return message_id is None or str(msg["Message-ID"]).lower() == message_id.lower()

    return match


def _describe(subject: str | None, header: tuple[str, str] | None, message_id: str | None) -> str:
    parts = [f"subject={subject!r}"] if subject is not None else []
    parts += [f"{header[0]}={header[1]!r}"] if header else []
    parts += [f"message_id={message_id}"] if message_id else []
    return " ".join(parts) or "any"


def run_scenario(
    path: str | Path,
    runtime: str | None = None,
    progress: Progress = _quiet,
    artifacts: Path = Path("mxlab-artifacts"),
    kinds: Mapping[str, str] | None = None,
) -> Any:
    """Bring up a scenario's lab, run its fault steps and checks, account for every
    message, tear it down; a failed run keeps the lab's files under ``artifacts``.
    ``kinds`` runs other software in the same roles: ``{"relay": "postfix", "store":
    "dovecot"}`` runs the scenario with Postfix and Dovecot in place of our nodes.
    Returns the scenario ``Outcome`` (``.ok``, ``.steps``, ``.accounting``)."""
    from mxlab.lab.kinds.swap import swap_kinds
    from mxlab.lab.scenario import load_scenario
    from mxlab.lab.scenario_run import run_scenario as run

    scenario, topo = load_scenario(Path(path))
    if kinds:
        topo = swap_kinds(topo, kinds)
    return run(scenario, topo, runtime, progress, artifacts)
