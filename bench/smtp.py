"""Relay throughput, end to end: smtp-source -> relay -> smtp-sink, for the mxlab
relay and for Postfix in the same run, and their ratio.

    python bench/smtp.py [--messages 1000] [--size 5120] [--sessions 10]

Both relays acknowledge only fsynced mail and relay to the same kind of sink; Postfix
runs as a private instance (own config and queue directory) on 127.30.250.x.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mxlab.nodes.config import Endpoint, QueuePolicy, RelayNodeConfig

HOST = "127.30.250"
SINK = Endpoint(host=f"{HOST}.2", port=2525)
MXLAB = Endpoint(host=f"{HOST}.3", port=2525)
POSTFIX = Endpoint(host=f"{HOST}.4", port=2525)
CONCURRENCY = 20  # Postfix's default_destination_concurrency_limit, for both


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
def mxlab_relay(workdir: Path) -> Iterator[None]:
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
        queue=QueuePolicy(concurrency_per_destination=CONCURRENCY),
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


def _master_cf() -> str:
    """Debian's master.cf, chroot off, the SMTP listener moved to our address."""
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line[:1] in ("", "#", " ", "\t") or len(fields) < 8:
            lines.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"{POSTFIX.host}:{POSTFIX.port}"
        fields[4] = "n"
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


@contextmanager
def postfix(workdir: Path) -> Iterator[None]:
    conf = workdir / "postfix"
    conf.mkdir()
    workdir.chmod(0o755)  # the postfix user walks into it
    (workdir / "spool").mkdir()  # postfix-script creates the queues inside
    (workdir / "data").mkdir()
    shutil.chown(workdir / "data", "postfix")
    (conf / "master.cf").write_text(_master_cf())
    (conf / "main.cf").write_text(
        "\n".join(
            [
                "compatibility_level = 3.6",
                f"queue_directory = {workdir / 'spool'}",
                f"data_directory = {workdir / 'data'}",
                "inet_interfaces = loopback-only",
                "inet_protocols = ipv4",
                "myhostname = postfix.bench.test",
                "mydestination =",
                "alias_maps =",
                "alias_database =",
                "local_recipient_maps =",
                "mynetworks = 127.0.0.0/8",
                "smtpd_relay_restrictions = permit_mynetworks, reject",
                f"relayhost = [{SINK.host}]:{SINK.port}",
                f"smtp_bind_address = {POSTFIX.host}",
                "smtp_dns_support_level = disabled",
                f"default_destination_concurrency_limit = {CONCURRENCY}",
                f"maillog_file = {workdir / 'postfix.log'}",
                f"maillog_file_prefixes = {workdir}",
                "",
            ]
        )
    )
    run = ["postfix", "-c", str(conf)]
    subprocess.run([*run, "start"], check=True, capture_output=True)
    try:
        wait_greeting(POSTFIX)
        yield
    finally:
        subprocess.run([*run, "stop"], capture_output=True)


def measure(target: Endpoint, args: argparse.Namespace) -> float:
    """Seconds from the first connection until the sink has every message."""
    sink = Sink()
    try:
        start = time.monotonic()
        subprocess.run(
            [
                "smtp-source",
                "-s",
                str(args.sessions),
                "-m",
                str(args.messages),
                "-l",
                str(args.size),
                "-f",
                "sender@alpha.test",
                "-t",
                "rcpt@beta.test",
                f"{target.host}:{target.port}",
            ],  # fmt: skip
            check=True,
        )
        deadline = start + 300
        while sink.count < args.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        if sink.count < args.messages:
            sys.exit(f"only {sink.count} of {args.messages} messages reached the sink")
        return time.monotonic() - start
    finally:
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=5120, help="message size in bytes")
    parser.add_argument("--sessions", type=int, default=10, help="parallel smtp-source sessions")
    args = parser.parse_args()
    for tool in ("smtp-source", "smtp-sink", "postfix"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install Debian's postfix package")
    with tempfile.TemporaryDirectory(prefix="mxlab-bench-") as tmp:
        workdir = Path(tmp)
        with postfix(workdir):
            pf = measure(POSTFIX, args)
        with mxlab_relay(workdir):
            mx = measure(MXLAB, args)
    n = args.messages
    print(f"{n} messages of {args.size} bytes, {args.sessions} sessions, end to end")
    print(f"{'relay':<10}{'seconds':>10}{'msg/s':>10}")
    print(f"{'postfix':<10}{pf:>10.2f}{n / pf:>10.0f}")
    print(f"{'mxlab':<10}{mx:>10.2f}{n / mx:>10.0f}")
    print(f"mxlab/postfix throughput ratio: {pf / mx:.2f}")


if __name__ == "__main__":
    main()
