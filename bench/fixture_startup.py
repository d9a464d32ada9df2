"""Time the mail_lab fixture from its start to the first message fetched back, on the
local runtime with the default lab (one domain: DNS, a relay, a store; two users).

Each round runs in a fresh Python process and a fresh MXLAB_HOME, as a new pytest session
would: import the plugin's lab pool, start the lab (and the reaper), submit one message
over 587 (STARTTLS, AUTH), wait until IMAP shows it; then bring the lab down. Printed:
the median of each phase, against the target (under 1 s). For scale, the same run times
a bare aiosmtpd SMTP sink (what many projects' mail fixtures are) from start to the
first message received; GreenMail, whose start-up (about 1 s) the target comes from, is
a reference only: it is not installed here.

Run: python bench/fixture_startup.py [ROUNDS]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

TARGET = 1.0

ROUND = r"""
import json, time
t0 = time.monotonic()
from mxlab.testing.pool import LabPool
pool = LabPool("local")
t1 = time.monotonic()
lab = pool.session_lab()
t2 = time.monotonic()
sent = lab.send("alice@example.test", ["bob@example.test"], subject="first")
lab.mailbox("bob@example.test").wait_for(message_id=sent.message_id, timeout=30)
t3 = time.monotonic()
pool.close()
print(json.dumps({"import": t1 - t0, "up": t2 - t1, "first": t3 - t2, "total": t3 - t0}))
"""

SINK = r"""
import json, smtplib, time
t0 = time.monotonic()
from aiosmtpd.controller import Controller
class Sink:
    messages = []
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"
import socket
with socket.socket() as probe:  # a free port (the Controller cannot take port 0)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
sink = Sink()
controller = Controller(sink, hostname="127.0.0.1", port=port)
controller.start()
with smtplib.SMTP("127.0.0.1", port) as smtp:
    smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: first\r\n\r\nhi\r\n")
while not sink.messages:
    time.sleep(0.001)
t1 = time.monotonic()
controller.stop()
print(json.dumps({"total": t1 - t0}))
"""


def run(code: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ, MXLAB_HOME=home),
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ours, sink = [], []
    for _ in range(rounds):  # alternate, so both see the same machine load
        ours.append(run(ROUND))
        sink.append(run(SINK))

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    total = median(ours, "total")
    print(f"mail_lab fixture start to first message fetched, local runtime, {rounds} rounds")
    print(f"  import of the plugin's pool   {median(ours, 'import'):6.3f} s")
    print(f"  lab up (3 nodes, reaper)      {median(ours, 'up'):6.3f} s")
    print(f"  submit + IMAP fetch           {median(ours, 'first'):6.3f} s")
    print(f"  total (median)                {total:6.3f} s   target < {TARGET:.1f} s: "
          f"{'met' if total < TARGET else 'NOT met'}")  # fmt: skip
    bare = median(sink, "total")
    print(f"  bare aiosmtpd sink, same run  {bare:6.3f} s   ratio {total / bare:.1f}x")
    print("  reference, not measured here: GreenMail starts in about 1 s")


if __name__ == "__main__":
    main()
