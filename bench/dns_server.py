"""Authoritative DNS throughput and latency: the mxlab DNS node against NSD serving the
same zone, in the same run, with dnsperf; prints both, their ratio (target >= 1.0x).

    python bench/dns_server.py [--seconds 10] [--hosts 200]

Both servers run one process on their own 127.10.200.x address: the node as
``python -m mxlab.nodes dns``, NSD in the foreground (-d) from a private config with
``server-count: 1`` and ``rrl-ratelimit: 0`` (Debian's RRL would cap it at ~450 qps).
Throughput: dnsperf at full speed (100 outstanding), in 5 short runs per server taken in
turns, the median compared (this machine's load drifts). Latency: a second, paced run
(-Q 2000), so the percentiles are service time rather than queueing. Correctness: every
response code of the paced run is checked against the expected one, the full-speed
run's response codes must come in the mix's proportions, and every distinct query of the
mix is answered by both servers and compared, record for record.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dnslib import EDNS0, DNSRecord

from mxlab.dns.zonefile import render_zone
from mxlab.nodes.config import DnsNodeConfig, DnsRecord, Zone

HOST = "127.10.200"
PORT = 25353
ROUNDS = 5  # throughput runs per server, alternating; the median is compared
ORIGIN = "bench.test."


def bench_zone(hosts: int) -> Zone:
    def r(name: str, type_: str, rdata: str, ttl: int = 300) -> DnsRecord:
        return DnsRecord(name=name, type=type_, ttl=ttl, rdata=rdata)

    records = [
        r(ORIGIN, "SOA", f"ns.{ORIGIN} hostmaster.{ORIGIN} 1 3600 600 86400 60"),
        r(ORIGIN, "NS", f"ns.{ORIGIN}"),
        r(ORIGIN, "MX", f"10 mx1.{ORIGIN}"),
        r(ORIGIN, "MX", f"20 mx2.{ORIGIN}"),
        r(ORIGIN, "TXT", '"v=spf1 mx -all"'),
        r(f"ns.{ORIGIN}", "A", "127.10.200.53"),
    ]
    for i in range(hosts):
        records.append(r(f"h{i}.{ORIGIN}", "A", f"127.10.{201 + i // 250}.{1 + i % 250}"))
        records.append(r(f"h{i}.{ORIGIN}", "MX", f"10 mx{1 + i % 2}.{ORIGIN}"))
        records.append(r(f"www{i}.{ORIGIN}", "CNAME", f"h{i}.{ORIGIN}"))
    records += [r(f"mx{n}.{ORIGIN}", "A", f"127.10.200.{24 + n}") for n in (1, 2)]
    return Zone(origin=ORIGIN, records=records)


def query_mix(hosts: int, count: int = 20000) -> list[tuple[str, str, str]]:
    """(name, type, expected rcode): mostly positive, with CNAMEs, NODATA and NXDOMAIN."""
    rng = random.Random(1)
    out = []
    for _ in range(count):
        i = rng.randrange(hosts)
        out.append(
            rng.choices(
                [
                    (f"h{i}.{ORIGIN}", "A", "NOERROR"),
                    (f"h{i}.{ORIGIN}", "MX", "NOERROR"),
                    (ORIGIN, "MX", "NOERROR"),
                    (f"www{i}.{ORIGIN}", "A", "NOERROR"),
                    (f"h{i}.{ORIGIN}", "AAAA", "NOERROR"),  # NODATA
                    (f"nx{i}.{ORIGIN}", "A", "NXDOMAIN"),
                ],
                weights=[40, 15, 10, 15, 10, 10],
            )[0]
        )
    return out


def wait_soa(host: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server on {host} exited with {proc.returncode}")
        if "SOA" in dig(host, ORIGIN, "SOA"):
            return
        time.sleep(0.1)
    sys.exit(f"server on {host} did not answer within {timeout}s")


def dig(host: str, name: str, rdtype: str) -> str:
    cmd = ["dig", f"@{host}", "-p", str(PORT), "+time=2", "+tries=2", "+norec", name, rdtype]
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def reply_of(host: str, name: str, rdtype: str) -> tuple[object, ...]:
    """What two correct servers agree on: rcode, flags, and each section's records in any
    order and any letter case. (dnslib: this file's name shadows dnspython's package.)"""
    query = DNSRecord.question(name, rdtype)
    query.header.rd = 0
    query.add_ar(EDNS0(udp_len=1232))
    for _ in range(3):  # UDP: a lost datagram is retried, as a resolver would
        try:
            reply = DNSRecord.parse(query.send(host, PORT, timeout=2))
            break
        except TimeoutError:
            continue
    else:
        return ("no reply",)
    h = reply.header
    sections = [sorted(str(rr).lower() for rr in rrs) for rrs in (reply.rr, reply.auth, reply.ar)]
    return h.rcode, (h.aa, h.tc, h.rd, h.ra), sections


def unexpected_codes(codes: dict[str, int], want: dict[str, float]) -> list[str]:
    """Full-speed rcodes: only the expected kinds, in the mix's proportions (±2%)."""
    total = sum(codes.values()) or 1
    bad = [f"{rc} {n}" for rc, n in codes.items() if rc not in want]
    bad += [
        f"{rc} {codes.get(rc, 0) / total:.3f} of replies, expected {share:.3f}"
        for rc, share in want.items()
        if abs(codes.get(rc, 0) / total - share) > 0.02
    ]
    return bad


def dnsperf(host: str, queries: Path, *args: str) -> str:
    cmd = ["dnsperf", "-s", host, "-p", str(PORT), "-d", str(queries), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def throughput(host: str, queries: Path, seconds: float) -> dict[str, object]:
    out = dnsperf(host, queries, "-l", str(seconds), "-q", "100", "-Q", "10000000")
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
    codes = dict(re.findall(r"(\w+) (\d+) \(", re.search(r"Response codes:(.*)", out).group(1)))
    return {"qps": qps, "lost": int(lost), "codes": {k: int(v) for k, v in codes.items()}}


def _median_run(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run with the median queries per second; its loss, and every run's rcodes."""
    middle = sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]
    codes: dict[str, int] = {}
    for r in runs:
        for rc, n in r["codes"].items():
            codes[rc] = codes.get(rc, 0) + n
    return {**middle, "codes": codes}


def latency(host: str, queries: Path, expected: dict[tuple[str, str], str]) -> dict[str, float]:
    """Paced run with -v: per-query rcode check and latency percentiles (ms)."""
    out = dnsperf(host, queries, "-l", "3", "-Q", "2000", "-q", "20", "-v")
    samples, wrong = [], 0
    for rcode, name, rdtype, seconds in re.findall(r"^> (\S+) (\S+) (\S+) ([\d.]+)$", out, re.M):
        samples.append(float(seconds) * 1000)
        wrong += expected[(name, rdtype)] != rcode
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p / 100 * len(samples)))]

    return {"n": len(samples), "wrong": wrong, "p50": pct(50), "p90": pct(90), "p99": pct(99)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hosts", type=int, default=200)
    args = parser.parse_args()
    for binary in ("dnsperf", "nsd", "dig"):
        if shutil.which(binary) is None and shutil.which(binary, path="/usr/sbin") is None:
            sys.exit(f"{binary} is not installed")
    zone = bench_zone(args.hosts)
    mix = query_mix(args.hosts)
    expected = {(n, t): rc for n, t, rc in mix}
    tmp = Path(tempfile.mkdtemp(prefix="mxlab-bench-dns-"))
    queries = tmp / "queries.txt"
    queries.write_text("".join(f"{n} {t}\n" for n, t, _ in mix))
    ours, nsd_host = f"{HOST}.2", f"{HOST}.3"
    config = DnsNodeConfig(
        lab="bench", node="dns", fqdn=f"ns.{ORIGIN}".rstrip("."), address=ours, port=PORT,
        state_dir=str(tmp / "state"), zones=[zone],
    )  # fmt: skip
    (tmp / "node.json").write_text(config.model_dump_json())
    (tmp / "bench.zone").write_text(render_zone(zone))
    (tmp / "nsd.conf").write_text(
        "server:\n"
        f"  ip-address: {nsd_host}@{PORT}\n  port: {PORT}\n"
        '  username: ""\n  chroot: ""\n  database: ""\n'
        f'  zonesdir: "{tmp}"\n  pidfile: "{tmp}/nsd.pid"\n'
        f'  xfrdfile: "{tmp}/xfrd.state"\n  zonelistfile: "{tmp}/zone.list"\n'
        f'  logfile: "{tmp}/nsd.log"\n  server-count: 1\n  rrl-ratelimit: 0\n'
        "remote-control:\n  control-enable: no\n"
        f"zone:\n  name: {ORIGIN}\n  zonefile: bench.zone\n"
    )
    node_log = (tmp / "node.log").open("w")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mxlab.nodes", "dns", "--config", str(tmp / "node.json")],
            stdout=node_log, stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(["nsd", "-d", "-c", str(tmp / "nsd.conf")], stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        wait_soa(ours, procs[0])
        wait_soa(nsd_host, procs[1])
        distinct = sorted(expected)  # every query of the mix, record for record
        pairs = {q: (reply_of(ours, *q), reply_of(nsd_host, *q)) for q in distinct}
        mismatched = {q: pair for q, pair in pairs.items() if pair[0] != pair[1]}
        servers = (("mxlab", ours), ("nsd", nsd_host))
        runs: dict[str, list[dict[str, object]]] = {label: [] for label, _ in servers}
        for _ in range(ROUNDS):  # alternate, so drift in the machine's load hits both alike
            for label, host in servers:
                runs[label].append(throughput(host, queries, args.seconds / ROUNDS))
        results = {
            label: {**_median_run(runs[label]), **latency(host, queries, expected)}
            for label, host in servers
        }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    want = {rc: sum(1 for *_, r in mix if r == rc) / len(mix) for rc in ("NOERROR", "NXDOMAIN")}
    print(f"zone: {len(zone.records)} records; queries: {len(mix)} ({want})")
    print(f"{'server':8} {'qps':>10} {'lost':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  rcodes")
    for label, r in results.items():
        print(
            f"{label:8} {r['qps']:>10.0f} {r['lost']:>6} {r['p50']:>8.3f} {r['p90']:>8.3f}"
            f" {r['p99']:>8.3f}  {r['codes']} (paced run: {r['wrong']} wrong of {r['n']})"
        )
    ratio = results["mxlab"]["qps"] / results["nsd"]["qps"]
    print(f"ratio mxlab/nsd: {ratio:.2f}x (target >= 1.00x)")
    print(f"answers differing from NSD's, of {len(distinct)} distinct queries: {len(mismatched)}")
    for q, (mine, theirs) in list(mismatched.items())[:10]:
        print(f"  {q}:\n    mxlab {mine}\n    nsd   {theirs}")
    odd = {label: unexpected_codes(r["codes"], want) for label, r in results.items()}
    for label, problems in odd.items():
        print(f"{label} full-speed rcodes off the mix: {problems or 'none'}")
    ok = not mismatched and not any(odd.values()) and all(r["wrong"] == 0 for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
