"""IMAP under client load, for the mxlab store and for Dovecot in the same run, and
their ratio (commands per second) with the protocol errors each saw; then SELECT and
FETCH-all times on a big mailbox for both.

    python bench/imap.py [--messages 200] [--clients 4] [--shared 10] [--seconds 10]
                         [--big 10000]

Three load profiles, each run in alternating short rounds against both servers:
- "mixed": --clients sessions, each logged in for its round (below);
- "shared": --shared sessions kept open on the one mailbox for the whole run, the
  same mix — a phone, a laptop and a webmail at once (issue 11);
- "login-per-command": --shared clients that each connect, log in, SELECT, run one
  command of the mix and log out, over and over.
A protocol error is a NO/BAD/BYE or a broken connection where OK was due, or an
untagged RECENT above the EXISTS just reported (RFC 3501 §2.3.2).

Both servers get the same mailbox (APPENDed over IMAP) and the same workload: each
client logs in, SELECTs INBOX, then loops over FETCH of flags and sizes, a UID FETCH
of one whole message, SEARCH UNSEEN, STORE +FLAGS, NOOP, and every tenth round
APPENDs a message, marks it \\Deleted and EXPUNGEs it. Dovecot runs as a private
instance (own config, base and mail directories) on 127.20.250.2; mxlab on .3.

The big mailbox ("Big", --big messages, APPENDed pipelined with LITERAL+) is timed
for SELECT and for ``FETCH 1:* ALL`` (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE): the
first FETCH (nothing cached yet) and the median of the ones after it.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mxlab.nodes.config import StoreNodeConfig, StoreUser
from mxlab.nodes.passwords import hash_password

HOST = "127.20.250"
DOVECOT = (f"{HOST}.2", 14300)
MXLAB = (f"{HOST}.3", 14300)
USER, PASSWORD = "bench@alpha.test", "bench-pw"

_DOVECOT_CONF = """\
protocols = imap
listen = {host}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{base}/mail/%u
mail_fsync = always
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  process_min_avail = 2
}}
service imap {{
  process_limit = 64
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
"""


def wait_greeting(address: tuple[str, int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, 1) as sock:
                if sock.recv(64).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no IMAP greeting from {address[0]}:{address[1]}")


@contextmanager
def dovecot(work: Path) -> Iterator[tuple[str, int]]:
    base = work / "dovecot"
    # Dovecot refuses to run mail processes as root: use nobody when we are root
    uid, gid = (os.getuid(), os.getgid())
    if uid == 0:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    for sub in ("run", "state", "mail", "home"):
        (base / sub).mkdir(parents=True)
    for sub in ("mail", "home"):
        os.chown(base / sub, uid, gid)
    (base / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    conf = base / "dovecot.conf"
    conf.write_text(
        _DOVECOT_CONF.format(host=DOVECOT[0], port=DOVECOT[1], base=base, uid=uid, gid=gid)
    )
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)])
    try:
        wait_greeting(DOVECOT)
        yield DOVECOT
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


@contextmanager
def mxlab_store(work: Path) -> Iterator[tuple[str, int]]:
    config = StoreNodeConfig(
        lab="bench",
        node="store",
        fqdn="store.alpha.test",
        address=MXLAB[0],
        state_dir=str(work / "mxlab"),
        lmtp_port=MXLAB[1] + 1,
        imap_port=MXLAB[1],
        pop3_port=MXLAB[1] + 2,
        domains=["alpha.test"],
        users={USER: StoreUser(password_hash=hash_password(PASSWORD))},
        allow_plaintext_auth=True,  # like the Dovecot it is compared with
    )
    path = work / "store.json"
    path.write_text(config.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "mxlab.nodes", "store", "--config", str(path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_greeting(MXLAB)
        yield MXLAB
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def sample_message(n: int) -> bytes:
    body = b"".join(b"line %d of message %d, some filler text to make it longer\r\n" % (i, n)
                    for i in range(60))  # fmt: skip
    return (
        b"From: Carol <carol@beta.test>\r\nTo: bench@alpha.test\r\n"
        b"Subject: bench message %d\r\nMessage-ID: <bench-%d@beta.test>\r\n\r\n" % (n, n) + body
    )


def seed(address: tuple[str, int], messages: int) -> None:
    imap = imaplib.IMAP4(*address)
    imap.login(USER, PASSWORD)
    for n in range(messages):
        imap.append("INBOX", None, None, sample_message(n))
    imap.logout()


class Tally:
    """Completed commands and protocol errors of one client."""

    def __init__(self) -> None:
        self.done = 0
        self.errors = 0

    def check_recent(self, imap: imaplib.IMAP4) -> None:
        """RECENT may never exceed the EXISTS reported with it (§2.3.2, §7.3.2)."""
        _, exists = imap.response("EXISTS")
        _, recent = imap.response("RECENT")
        if exists and recent and exists[-1] and recent[-1] and int(recent[-1]) > int(exists[-1]):
            self.errors += 1


def one_round(imap: imaplib.IMAP4, rng: random.Random, total: int, tally: Tally) -> None:
    """The mix: FETCH flags and sizes, a whole message, SEARCH, STORE, NOOP."""
    n = rng.randint(1, total)
    imap.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
    imap.uid("FETCH", str(n), "(BODY.PEEK[])")
    imap.search(None, "UNSEEN")
    imap.store(str(rng.randint(1, total)), "+FLAGS", "(\\Seen)")
    imap.noop()
    tally.check_recent(imap)
    tally.done += 5


def churn(imap: imaplib.IMAP4, slot: int, total: int, tally: Tally) -> None:
    """The mailbox keeps its size: append one message, expunge it by UID."""
    typ, data = imap.append("INBOX", None, None, sample_message(total + slot))
    uid = data[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]").decode()
    imap.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
    imap.uid("EXPUNGE", uid)
    tally.done += 3


def opened(address: tuple[str, int]) -> tuple[imaplib.IMAP4, int]:
    imap = imaplib.IMAP4(*address)
    imap.login(USER, PASSWORD)
    _, data = imap.select("INBOX")
    return imap, int(data[0])


Session = tuple[imaplib.IMAP4, int]  # a logged-in connection and its EXISTS at SELECT


def session_loop(
    address: tuple[str, int], session: Session, stop: float, tally: Tally, slot: int
) -> Session:
    """The mix on one open session until ``stop``; a broken connection is an error
    and is replaced. Returns the session in use at the end."""
    rng = random.Random(slot)
    rounds = 0
    while time.monotonic() < stop:
        imap, total = session
        try:
            one_round(imap, rng, total, tally)
            rounds += 1
            if rounds % 10 == 0:
                churn(imap, slot, total, tally)
        except imaplib.IMAP4.abort:
            tally.errors += 1
            session = opened(address)
        except imaplib.IMAP4.error:
            tally.errors += 1
    return session


def mixed_client(address: tuple[str, int], stop: float, tally: Tally, slot: int) -> None:
    """One session for the round, logged in and out once."""
    session = session_loop(address, opened(address), stop, tally, slot)
    session[0].logout()
    tally.done += 3  # LOGIN, SELECT, LOGOUT


def per_command_client(address: tuple[str, int], stop: float, tally: Tally, slot: int) -> None:
    """Connect, LOGIN, SELECT, one command of the mix, LOGOUT; each counts."""
    rng = random.Random(slot)
    step = 0
    while time.monotonic() < stop:
        try:
            imap, total = opened(address)
            n = str(rng.randint(1, total))
            step += 1
            if step % 5 == 0:
                imap.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
            elif step % 5 == 1:
                imap.uid("FETCH", n, "(BODY.PEEK[])")
            elif step % 5 == 2:
                imap.search(None, "UNSEEN")
            elif step % 5 == 3:
                imap.store(n, "+FLAGS", "(\\Seen)")
            else:
                imap.noop()
            tally.check_recent(imap)
            imap.logout()
            tally.done += 4
        except imaplib.IMAP4.error:
            tally.errors += 1


def run_clients(target: Callable[[int, float, Tally], None], clients: int, seconds: float) -> Tally:
    """``target(slot, stop, tally)`` in ``clients`` threads for ``seconds``; the summed
    tally, ``done`` as commands per second."""
    tallies = [Tally() for _ in range(clients)]
    stop = time.monotonic() + seconds
    started = time.monotonic()
    threads = [threading.Thread(target=target, args=(i, stop, tallies[i])) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = Tally()
    total.done = round(sum(t.done for t in tallies) / (time.monotonic() - started))
    total.errors = sum(t.errors for t in tallies)
    return total


def measure(address: tuple[str, int], clients: int, seconds: float, profile: str) -> Tally:
    client = per_command_client if profile == "login-per-command" else mixed_client
    return run_clients(lambda slot, stop, t: client(address, stop, t, slot), clients, seconds)


class SharedSessions:
    """--shared sessions opened once and kept open across every round ("shared")."""

    def __init__(self, address: tuple[str, int], clients: int) -> None:
        self.address = address
        self.sessions = [opened(address) for _ in range(clients)]

    def measure(self, seconds: float) -> Tally:
        def run(slot: int, stop: float, tally: Tally) -> None:
            self.sessions[slot] = session_loop(self.address, self.sessions[slot], stop, tally, slot)

        return run_clients(run, len(self.sessions), seconds)

    def close(self) -> None:
        for imap, _ in self.sessions:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()


class RawImap:
    """A bare IMAP connection for timing: send one command, read to its tagged reply,
    no parsing of what comes between (imaplib's per-line Python would dominate)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, 30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.count = 0
        greeting = b""
        while b"\r\n" not in greeting:
            greeting += self.sock.recv(4096)
        self.pending = greeting.split(b"\r\n", 1)[1]

    def send(self, command: bytes) -> bytes:
        """The tag the command was sent with."""
        self.count += 1
        tag = b"T%d" % self.count
        self.sock.sendall(tag + b" " + command + b"\r\n")
        return tag

    def wait(self, tag: bytes) -> bytes:
        """Everything up to and including the line tagged ``tag``, which must be OK."""
        marker = b"\r\n" + tag + b" "
        data = b"\r\n" + self.pending  # responses start on a line boundary
        chunks = []
        while True:
            end = data.find(marker)
            if end >= 0:
                line_end = data.find(b"\r\n", end + 2)
                while line_end < 0:
                    data += self.sock.recv(65536)
                    line_end = data.find(b"\r\n", end + 2)
                chunks.append(data[: line_end + 2])
                self.pending = data[line_end + 2 :]
                break
            chunks.append(data[: -len(marker)])
            more = self.sock.recv(1 << 20)
            if not more:
                raise SystemExit("the server closed the connection")
            data = data[-len(marker) :] + more
        full = b"".join(chunks)
        if not full[full.rfind(marker) + len(marker) :].startswith(b"OK"):
            raise SystemExit(f"IMAP error: {full[-300:]!r}")
        return full[2:]

    def command(self, command: bytes) -> bytes:
        return self.wait(self.send(command))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command(b"LOGOUT")
        self.sock.close()


def seed_big(address: tuple[str, int], messages: int, batch: int = 200) -> None:
    """``messages`` APPENDs to "Big", pipelined in batches (LITERAL+, RFC 7888)."""
    imap = RawImap(address)
    imap.command(b"LOGIN %s %s" % (USER.encode(), PASSWORD.encode()))
    imap.command(b"CREATE Big")
    for start in range(0, messages, batch):
        tags = []
        for n in range(start, min(start + batch, messages)):
            data = sample_message(n)
            tags.append(imap.send(b"APPEND Big {%d+}\r\n" % len(data) + data))
        for tag in tags:
            imap.wait(tag)
    imap.close()


def time_big(address: tuple[str, int], messages: int, repeats: int = 5) -> dict[str, float]:
    """Seconds: SELECT (median), first FETCH 1:* ALL, later FETCH 1:* ALL (median)."""
    imap = RawImap(address)
    imap.command(b"LOGIN %s %s" % (USER.encode(), PASSWORD.encode()))
    selects, fetches = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        reply = imap.command(b"SELECT Big")
        selects.append(time.perf_counter() - started)
        if b"* %d EXISTS" % messages not in reply:
            raise SystemExit(f"SELECT Big: expected {messages} messages: {reply[:300]!r}")
        started = time.perf_counter()
        reply = imap.command(b"FETCH 1:* ALL")
        fetches.append(time.perf_counter() - started)
        if reply.count(b" FETCH (") != messages:
            raise SystemExit("FETCH 1:* ALL: wrong number of responses")
    imap.close()
    return {
        "SELECT": statistics.median(selects),
        "FETCH ALL (first)": fetches[0],
        "FETCH ALL (again)": statistics.median(fetches[1:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4, help="mixed profile")
    parser.add_argument("--shared", type=int, default=10, help="shared and per-command")
    parser.add_argument("--seconds", type=float, default=10.0, help="per server, in total")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=10_000, help="big-mailbox size; 0 skips it")
    args = parser.parse_args()
    if shutil.which("dovecot") is None:
        print("dovecot is not installed: nothing to compare against", file=sys.stderr)
        return 2
    profiles = ("mixed", "shared", "login-per-command")
    runs: dict[str, dict[str, list[Tally]]] = {p: {"dovecot": [], "mxlab": []} for p in profiles}
    big: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mxlab-bench-imap-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # Dovecot's auth process (user dovecot) reads the passwd-file
        with dovecot(work) as dove, mxlab_store(work) as ours:
            servers = (("dovecot", dove), ("mxlab", ours))
            for _, address in servers:
                seed(address, args.messages)
            shared = {name: SharedSessions(address, args.shared) for name, address in servers}
            # alternate short rounds, so drift in the machine's load hits both alike
            each = args.seconds / args.rounds
            for _ in range(args.rounds):
                for name, address in servers:
                    runs["mixed"][name].append(measure(address, args.clients, each, "mixed"))
                    runs["shared"][name].append(shared[name].measure(each))
                    runs["login-per-command"][name].append(
                        measure(address, args.shared, each, "login-per-command")
                    )
            for sessions in shared.values():
                sessions.close()
            if args.big:
                for name, address in servers:
                    started = time.perf_counter()
                    seed_big(address, args.big)
                    seeded = time.perf_counter() - started
                    big[name] = {"APPEND all (seeding)": seeded, **time_big(address, args.big)}
    print(f"{'profile':18} {'dovecot':>9} {'mxlab':>9}  ratio  errors (dovecot/mxlab)")
    for profile, by_server in runs.items():
        rate = {n: statistics.median(t.done for t in ts) for n, ts in by_server.items()}
        errors = {n: sum(t.errors for t in ts) for n, ts in by_server.items()}
        pairs = zip(by_server["mxlab"], by_server["dovecot"], strict=True)
        ratio = statistics.median(m.done / max(d.done, 1) for m, d in pairs)
        print(
            f"{profile:18} {rate['dovecot']:7.0f}/s {rate['mxlab']:7.0f}/s {ratio:6.2f}"
            f"  {errors['dovecot']}/{errors['mxlab']}"
        )
    if big:
        print(f"\n{args.big}-message mailbox   dovecot     mxlab   mxlab/dovecot time")
        for what in big["mxlab"]:
            d, m = big["dovecot"][what], big["mxlab"][what]
            print(f"{what:22} {d * 1000:8.0f} ms {m * 1000:8.0f} ms {m / d:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
