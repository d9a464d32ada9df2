"""IMAP under a mixed client load, for the mxlab store and for Dovecot in the same
run, and their ratio (commands per second).

    python bench/imap.py [--messages 200] [--clients 4] [--seconds 10]

Both servers get the same mailbox (APPENDed over IMAP) and the same workload: each
client logs in, SELECTs INBOX, then loops over FETCH of flags and sizes, a UID FETCH
of one whole message, SEARCH UNSEEN, STORE +FLAGS, NOOP. Dovecot runs as a private
instance (own config, base and mail directories) on 127.20.250.2; mxlab on .3.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator
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


def client(address: tuple[str, int], stop: float, counts: list[int], slot: int) -> None:
    """The mixed load; counts[slot] is this client's completed commands."""
    rng = random.Random(slot)
    imap = imaplib.IMAP4(*address)
    imap.login(USER, PASSWORD)
    typ, data = imap.select("INBOX")
    total = int(data[0])
    done = 2
    while time.monotonic() < stop:
        n = rng.randint(1, total)
        imap.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
        imap.uid("FETCH", str(n), "(BODY.PEEK[])")
        imap.search(None, "UNSEEN")
        imap.store(str(n), "+FLAGS", "(\\Seen)")
        imap.noop()
        done += 5
    imap.logout()
    counts[slot] = done + 1


def measure(address: tuple[str, int], clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds
    started = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(address, stop, counts, i)) for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="per server, in total")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("dovecot") is None:
        print("dovecot is not installed: nothing to compare against", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {"dovecot": [], "mxlab": []}
    with tempfile.TemporaryDirectory(prefix="mxlab-bench-imap-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # Dovecot's auth process (user dovecot) reads the passwd-file
        with dovecot(work) as dove, mxlab_store(work) as ours:
            for address in (dove, ours):
                seed(address, args.messages)
            # alternate short rounds, so drift in the machine's load hits both alike
            for _ in range(args.rounds):
                for name, address in (("dovecot", dove), ("mxlab", ours)):
                    rates[name].append(measure(address, args.clients, args.seconds / args.rounds))
    for name, values in rates.items():
        print(f"{name:8} {statistics.median(values):8.0f} commands/s (median of {len(values)})")
    ratios = [m / d for m, d in zip(rates["mxlab"], rates["dovecot"], strict=True)]
    print(f"ratio mxlab/dovecot: {statistics.median(ratios):.2f} (median of rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
