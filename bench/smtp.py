"""Relay throughput and latency, end to end: smtp-source -> relay -> smtp-sink, for
the mxlab relay and for Postfix set up as the same relay, in the same run.

    python bench/smtp.py [--messages 1000] [--size 5120] [--sessions 1 20]
                         [--large-messages 100] [--large-size 1048576] [--probes 200]
                         [--one-process]

Two profiles: small messages (--size) and large ones (--large-size, 1 MB; fewer of
them). For each profile and session count: messages/s accepted (smtp-source done)
and relayed (all at the sink), and the ratio mxlab/Postfix beside its target (issue
18: small ≥1.0 at one session, ≥1.5 at 20; large ≥1.0 at both), with the whole
machine's CPU per message and how busy its cores were. Then latency probes
for small messages: p50/p99 of "accepted" (connect to 250 after the data) and
"relayed" (connect to arrival at a probe sink behind the relay).

A fair comparison: the same route (smtp-source -> relay -> one smtp-sink, the next
hop fixed, no DNS), the same durability (each relay answers 250 only once the message
is fsynced: Postfix's cleanup fsyncs the queue file, ours the file and its directory),
the same concurrency towards the sink (20 sessions), and no content checks on either
side (Postfix runs no milters, our relay no mail authentication). Postfix works in
several processes (smtpd, cleanup, qmgr, smtp); our relay in two, receiving and
delivering (queue.delivery_process), or in one with --one-process. Postfix runs as a
private instance (own config and queue) on 127.30.250.x. The private-instance helper
is also what the relay's Postfix interop tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller

from mxlab.nodes.config import Endpoint, MailAuth, QueuePolicy, RelayNodeConfig

HOST = "127.30.250"
SINK = Endpoint(host=f"{HOST}.2", port=2525)
MXLAB = Endpoint(host=f"{HOST}.3", port=2525)
POSTFIX = Endpoint(host=f"{HOST}.4", port=2525)
CONCURRENCY = 20  # Postfix's default_destination_concurrency_limit, for both
# Between phases the sink is replaced: both relays cache idle sessions for 2 s
# (smtp_connection_cache_time_limit), so a phase starts once those are gone.
IDLE = 2.5
MAX_SIZE = 32 * 1024 * 1024  # both: room for the large profile
# (profile, sessions) -> the target for mxlab/Postfix relayed throughput
TARGETS = {("small", 1): 1.0, ("small", 20): 1.5, ("large", 1): 1.0, ("large", 20): 1.0}


class Sink:
    """smtp-sink with its running counter (-c) read as messages arrive."""

    def __init__(self) -> None:
        self.count = 0
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-c", f"{SINK.host}:{SINK.port}", "256"],
            stdout=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_greeting(SINK)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            counts = re.findall(rb"mesg=(\d+)", chunk)
            if counts:
                self.count = int(counts[-1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def wait_greeting(ep: Endpoint, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ep.host, ep.port), timeout=1) as sock:
                if sock.recv(3) == b"220":
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing answers SMTP on {ep.host}:{ep.port}")


@contextmanager
def mxlab_relay(workdir: Path, delivery_process: bool) -> Iterator[None]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = RelayNodeConfig(
        lab="bench",
        node="relay",
        fqdn="relay.bench.test",
        address=MXLAB.host,
        state_dir=str(workdir / "mxlab"),
        smtp_port=MXLAB.port,
        submission_port=MXLAB.port + 1,
        remote_smtp_port=SINK.port,
        dns=Endpoint(host=f"{HOST}.1", port=5353),  # unused: the next hop is fixed
        trusted_clients=["127.0.0.1"],
        next_hop=SINK,
        queue=QueuePolicy(
            concurrency_per_destination=CONCURRENCY, delivery_process=delivery_process
        ),
        max_message_size=MAX_SIZE,
        mailauth=MailAuth(verify=False),  # Postfix checks no SPF/DKIM/DMARC here either
    )
    path = workdir / "relay.json"
    path.write_text(config.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "mxlab.nodes", "relay", "--config", str(path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_greeting(MXLAB)
        yield
    finally:
        proc.terminate()
        proc.wait()


# -- Postfix as a private instance ------------------------------------------------------


def _master_cf(listen: Endpoint) -> str:
    """Debian's master.cf, chroot off, the SMTP listener moved to ``listen``."""
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line[:1] in ("", "#", " ", "\t") or len(fields) < 8:
            lines.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"{listen.host}:{listen.port}"
        fields[4] = "n"
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


@dataclass
class Postfix:
    """A running private Postfix: its listener and its mail log."""

    listen: Endpoint
    log: Path
    settings: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def postfix_missing() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    for tool in ("postfix", "smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install Debian's postfix package"
    if os.geteuid() != 0:
        return "a private Postfix needs root (its master runs as root)"
    return None


@contextmanager
def private_postfix(
    listen: Endpoint, settings: dict[str, str], resolver: Endpoint | None = None
) -> Iterator[Postfix]:
    """Postfix with its own config and queue in a fresh directory (REFERENCES.md
    traps: loopback-only plus the listener in master.cf, chroot off, maillog_file).
    With ``resolver`` it runs in a mount namespace whose /etc/resolv.conf names that
    server (port 53: the resolver library knows no other), so it looks MX records
    up in a lab DNS without touching the host's resolver."""
    workdir = Path(tempfile.mkdtemp(prefix="mxlab-postfix-"))
    workdir.chmod(0o755)  # the postfix user walks into it
    try:
        with _postfix_in(workdir, listen, settings, resolver) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _postfix_in(
    workdir: Path, listen: Endpoint, settings: dict[str, str], resolver: Endpoint | None
) -> Iterator[Postfix]:
    conf = workdir / "postfix"
    conf.mkdir()
    (workdir / "spool").mkdir()  # postfix-script creates the queues inside
    (workdir / "data").mkdir()
    shutil.chown(workdir / "data", "postfix")
    log = workdir / "postfix.log"
    main = {
        "compatibility_level": "3.6",
        "queue_directory": str(workdir / "spool"),
        "data_directory": str(workdir / "data"),
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mydestination": "",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "maillog_file": str(log),
        "maillog_file_prefixes": str(workdir),
        **settings,
    }
    (conf / "master.cf").write_text(_master_cf(listen))
    (conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
    command = ["postfix", "-c", str(conf)]
    start = [*command, "start"]
    if resolver is not None:
        if resolver.port != 53:
            raise ValueError("the resolver library asks port 53 only")
        resolv = workdir / "resolv.conf"
        resolv.write_text(f"nameserver {resolver.host}\noptions attempts:1 timeout:2\n")
        script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"'
        start = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "-", *start]
    done = subprocess.run(start, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"postfix start failed: {done.stderr.strip()}")
    try:
        wait_greeting(listen)
        yield Postfix(listen, log, main)
    finally:
        subprocess.run([*command, "stop"], capture_output=True)


@contextmanager
def postfix_relay(workdir: Path) -> Iterator[None]:  # noqa: ARG001 - its own directory
    """Postfix set up as the same relay as ours: everything to the sink, fsync on."""
    settings = {
        "myhostname": "postfix.bench.test",
        "relayhost": f"[{SINK.host}]:{SINK.port}",
        "smtp_bind_address": POSTFIX.host,
        "smtp_dns_support_level": "disabled",
        "default_destination_concurrency_limit": str(CONCURRENCY),
        "message_size_limit": str(MAX_SIZE),
    }
    with private_postfix(POSTFIX, settings):
        yield


# -- measurements ---------------------------------------------------------------------


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, every core, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


@dataclass
class Run:
    accepted: float  # seconds until smtp-source has every 250
    relayed: float  # seconds until the sink has every message
    busy: float  # CPU seconds the whole machine spent meanwhile (source, relay, sink)
    capacity: float  # CPU seconds all cores had meanwhile


def throughput(target: Endpoint, messages: int, size: int, sessions: int) -> Run:
    """One smtp-source run through ``target`` to a fresh sink, with the machine's CPU."""
    sink = Sink()
    try:
        busy, total = machine_cpu()
        start = time.monotonic()
        subprocess.run(
            [
                "smtp-source",
                "-s",
                str(sessions),
                "-m",
                str(messages),
                "-l",
                str(size),
                "-f",
                "sender@alpha.test",
                "-t",
                "rcpt@beta.test",
                f"{target.host}:{target.port}",
            ],  # fmt: skip
            check=True,
        )
        accepted = time.monotonic() - start
        deadline = start + 300
        while sink.count < messages and time.monotonic() < deadline:
            time.sleep(0.005)
        if sink.count < messages:
            sys.exit(f"only {sink.count} of {messages} messages reached the sink")
        relayed = time.monotonic() - start
        busy_after, total_after = machine_cpu()
        return Run(accepted, relayed, busy_after - busy, total_after - total)
    finally:
        sink.stop()


class _ProbeSink:
    """Records when each probe message reaches the next hop."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content = envelope.original_content  # type: ignore[attr-defined]
        m = re.search(rb"^X-Probe: (\d+)", content, re.M)
        if m:
            self.arrived[int(m.group(1))] = time.perf_counter()
        return "250 2.0.0 Ok"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if line[3:4] != b"-":
            return line


COMMANDS = (
    b"EHLO probe.test",
    b"MAIL FROM:<probe@alpha.test>",
    b"RCPT TO:<rcpt@beta.test>",
    b"DATA",
)


async def _probe_client(
    target: Endpoint, sessions: int, count: int, size: int
) -> tuple[dict[int, float], list[float]]:
    """``count`` messages over ``sessions`` parallel connections, one message per
    connection as smtp-source sends them; start times and accept latencies."""
    started: dict[int, float] = {}
    accepted: list[float] = []
    filler = (b"x" * 70 + b"\r\n") * max(size // 72, 1)

    async def one(n: int) -> None:
        started[n] = t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(target.host, target.port)
        await _reply(reader)
        for command in COMMANDS:
            writer.write(command + b"\r\n")
            await _reply(reader)
        # unique bytes: a relay may drop a byte-identical retransmission (RFC 1047)
        head = b"Subject: probe\r\nX-Probe: %d\r\nX-Run: %d\r\n\r\n" % (n, time.time_ns())
        writer.write(head + filler + b".\r\n")
        if (await _reply(reader))[:1] == b"2":
            accepted.append(time.perf_counter() - t0)
        writer.write(b"QUIT\r\n")
        await _reply(reader)
        writer.close()

    async def session(first: int) -> None:
        for n in range(first, count, sessions):
            await one(n)

    await asyncio.gather(*(session(i) for i in range(sessions)))
    return started, accepted


def latency(target: Endpoint, args: argparse.Namespace, sessions: int) -> tuple[list[float], ...]:
    """Accept and relay latencies of probe messages, in seconds."""
    handler = _ProbeSink()
    sink = Controller(handler, hostname=SINK.host, port=SINK.port)
    sink.start()
    try:
        started, accepted = asyncio.run(_probe_client(target, sessions, args.probes, args.size))
        deadline = time.monotonic() + 60
        while len(handler.arrived) < len(accepted) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        sink.stop()
    relayed = [at - started[n] for n, at in handler.arrived.items()]
    return accepted, relayed


def pct(values: list[float], p: float) -> float:
    """The p-th percentile in milliseconds."""
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=5120, help="message size in bytes")
    parser.add_argument("--large-messages", type=int, default=100)
    parser.add_argument("--large-size", type=int, default=1 << 20, help="0: no large profile")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per relay")
    parser.add_argument("--probes", type=int, default=200, help="latency probe messages")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="our relay without its delivery process (queue.delivery_process off)",
    )
    args = parser.parse_args()
    problem = postfix_missing()
    if problem is not None:
        sys.exit(problem)
    relays = (("postfix", POSTFIX), ("mxlab", MXLAB))
    profiles = {"small": (args.messages, args.size)}
    if args.large_size:
        profiles["large"] = (args.large_messages, args.large_size)
    runs: dict[tuple[str, int, str], list[Run]] = {}
    probes: dict[tuple[int, str], tuple[list[float], ...]] = {}
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="mxlab-bench-") as tmp,
        postfix_relay(Path(tmp)),
        mxlab_relay(Path(tmp) / "mxlab", delivery_process=not args.one_process),
    ):
        # Both relays run side by side and take turns, so load from elsewhere on the
        # machine falls on both; each figure is the median of the rounds. Not quite
        # alike: the kernel shares a busy CPU by thread, and Postfix's several
        # processes get more of it than our one, so the load is printed too.
        for profile, (messages, size) in profiles.items():
            for sessions in args.sessions:
                for _ in range(args.rounds):
                    for name, target in relays:
                        timed = throughput(target, messages, size, sessions)
                        runs.setdefault((profile, sessions, name), []).append(timed)
                        time.sleep(IDLE)
        for sessions in args.sessions:
            for name, target in relays:
                probes[sessions, name] = latency(target, args, sessions)
                time.sleep(IDLE)
    print(
        "smtp-source -> relay -> smtp-sink, fsync on both; "
        f"median of {args.rounds} alternating rounds"
    )
    cores = os.cpu_count()
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, {cores} cores"
    print(f"load average: {load} (a loaded machine favours Postfix's many processes)")
    # CPU per message, whole machine: with both relays fed and drained by the same
    # smtp-source and smtp-sink, it says which relay does less work per message;
    # "busy" says how much of the cores it could use (our relay is one process)
    head = ("profile", "sessions", "relay", "accepted/s", "relayed/s", "CPU ms/msg", "busy")
    print("{:<24}{:<9}{:<9}{:>11}{:>11}{:>12}{:>7}".format(*head))
    rate: dict[tuple[str, int, str], float] = {}
    for profile, (messages, size) in profiles.items():
        label = f"{profile} ({messages} x {size} B)"
        for sessions in args.sessions:
            for name, _ in relays:
                done = runs[profile, sessions, name]
                accepted = messages / statistics.median(r.accepted for r in done)
                relayed = messages / statistics.median(r.relayed for r in done)
                cpu = statistics.median(r.busy for r in done) / messages * 1000
                busy = statistics.median(r.busy / r.capacity for r in done)
                rate[profile, sessions, name] = relayed
                print(
                    f"{label:<24}{sessions:<9}{name:<9}{accepted:>11.0f}{relayed:>11.0f}"
                    f"{cpu:>12.2f}{busy:>7.0%}"
                )
    print(f"latency: {args.probes} probes of {args.size} B, connect to 250 (accept) and to")
    print("the next hop (relay)")
    columns = ("sessions", "relay", "accept p50/p99 ms", "relay p50/p99 ms")
    print("{:<9}{:<9}{:>20}{:>19}".format(*columns))
    for sessions in args.sessions:
        for name, _ in relays:
            lat_accept, lat_relay = probes[sessions, name]
            a = f"{pct(lat_accept, 50):.2f}/{pct(lat_accept, 99):.2f}"
            r = f"{pct(lat_relay, 50):.2f}/{pct(lat_relay, 99):.2f}"
            print(f"{sessions:<9}{name:<9}{a:>20}{r:>19}")
    for profile in profiles:
        for sessions in args.sessions:
            ratio = rate[profile, sessions, "mxlab"] / rate[profile, sessions, "postfix"]
            goal = TARGETS.get((profile, sessions))
            aim = f"target {goal}" if goal is not None else "no target"
            print(
                f"mxlab/postfix relayed throughput, {profile}, {sessions} session(s): "
                f"{ratio:.2f} ({aim})"
            )


if __name__ == "__main__":
    main()
