"""DKIM in the lab, without a running lab: a plan's keys and zones (served by the DNS
node), the relay's signing and checks, the topology's switches that break them, and
independent verifiers both ways — dkimpy's ``dkimverify`` and OpenDKIM's
``opendkim-testmsg`` accept our signatures, and OpenDKIM's signature passes our checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mxlab.lab import mailauth
from mxlab.lab.plan import LabPlan, make_plan
from mxlab.lab.topology import parse_topology
from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.mailauth import forward, sign, verify
from tests import test_dns_support
from tests.test_dns_support import DnsNode

TOPOLOGY = """
name: dkimlab
nodes:
  ns: {kind: dns}
  mx-alpha: {kind: relay}
  mx-beta: {kind: relay}
  mx-gamma: {kind: relay}
  mx-delta: {kind: relay}
  store: {kind: store}
domains:
  alpha.test:
    {store: store, mx: [{node: mx-alpha}], users: {alice: a-secret}, auth: {dmarc: reject}}
  beta.test:
    {store: store, mx: [{node: mx-beta}], users: {bob: b-secret}, auth: {wrong_selector: true}}
  gamma.test:
    {store: store, mx: [{node: mx-gamma}], users: {carol: c-secret}, auth: {missing_key: true}}
  delta.test:
    store: store
    mx: [{node: mx-delta}]
    users: {dan: d-secret}
    auth: {sign_as: alpha.test, dmarc: reject}
"""
MESSAGE = (
    b"From: {sender}\r\nTo: someone@elsewhere.test\r\nSubject: signed in the lab\r\n"
    b"Date: Tue, 01 Dec 2026 03:00:00 +0000\r\nMessage-ID: <t1@mxlab.test>\r\n\r\n"
    b"Hello,\r\nthis body is signed.\r\n"
)


@dataclass
class Lab:
    plan: LabPlan
    dir: Path
    dns: DnsNode


pytestmark = pytest.mark.usefixtures("dns_resolver_restored")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The plan's zones on a DNS node (port 53 when root, so resolv.conf can name it),
    and its keys written as the lab directory keeps them."""
    root = tmp_path_factory.mktemp("dkimlab")
    plan = make_plan(parse_topology(TOPOLOGY), runtime="local", lab_dir=root)
    relays = {
        root / "nodes" / name: node.config.mailauth
        for name, node in plan.nodes.items()
        if isinstance(node.config, RelayNodeConfig)
    }
    mailauth.write_keys(root, plan.dkim, relays)
    with pytest.MonkeyPatch.context() as mp:
        if os.geteuid() == 0:
            mp.setattr(test_dns_support, "free_port", lambda: 53)
        dns = DnsNode(root / "dns", plan.zones)
    verify.use_lab_dns(dns.address, dns.port)
    yield Lab(plan, root, dns)
    dns.stop()


def signed(lab: Lab, relay: str, sender: str) -> bytes:
    """The message as relay ``relay`` signs what ``sender`` submits."""
    config = lab.plan.nodes[relay].config
    assert isinstance(config, RelayNodeConfig)
    message = MESSAGE.replace(b"{sender}", sender.encode())
    keys = config.mailauth.sign[sender.rpartition("@")[2]]
    return sign.dkim_headers(message, keys) + message


def check(lab: Lab, message: bytes, relay: str, sender: str) -> verify.Verdict:
    node = lab.plan.nodes[relay]
    return verify.check(
        message, ip=node.address, helo=node.fqdn, mail_from=sender, authserv_id="mx.test"
    )


def test_records_keys_and_files(lab: Lab) -> None:
    txt = {r.name: r.rdata for z in lab.plan.zones for r in z.records if r.type == "TXT"}
    alpha = lab.plan.nodes["mx-alpha"]
    assert txt["alpha.test."] == f'"v=spf1 ip4:{alpha.address} -all"'
    assert txt["_dmarc.alpha.test."] == '"v=DMARC1; p=reject"'
    assert txt["ed._domainkey.alpha.test."].startswith('"v=DKIM1; k=ed25519; p=')
    assert '" "' in txt["rsa._domainkey.alpha.test."]  # a 2048-bit key: several strings
    assert "rsa._domainkey.gamma.test." not in txt  # missing_key
    keys = sorted(p.name for p in (lab.dir / "dkim").iterdir())
    assert "alpha.test.ed.key" in keys and "delta.test.rsa.key" in keys
    for path in (lab.dir / "dkim").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path  # lab secrets are 0600
    assert all(k.private == b"" for k in type(lab.plan).model_validate_json(
        lab.plan.model_dump_json()).dkim)  # fmt: skip  # never in plan.json
    # a second plan of the same lab directory keeps its keys (and its DNS records)
    again = make_plan(parse_topology(TOPOLOGY), runtime="local", lab_dir=lab.dir)
    assert [k.public for k in again.dkim] == [k.public for k in lab.plan.dkim]


def test_lab_signatures_pass_our_checks(lab: Lab) -> None:
    verdict = check(
        lab, signed(lab, "mx-alpha", "alice@alpha.test"), "mx-alpha", "alice@alpha.test"
    )
    assert verdict.spf == "pass"
    assert sorted(verdict.dkim) == [("pass", "alpha.test"), ("pass", "alpha.test")]
    assert verdict.dmarc is not None and verdict.dmarc.result == "pass"
    assert verdict.action == "accept"
    header = verdict.header.decode()
    assert header.startswith("Authentication-Results: mx.test;") and "header.s=ed" in header


def test_switches_break_what_they_say(lab: Lab) -> None:
    message = signed(lab, "mx-alpha", "alice@alpha.test")
    footer = forward.add_footer(message, "-- \nSent through a list")
    broken = check(lab, footer, "mx-alpha", "alice@alpha.test")
    assert [r for r, _ in broken.dkim] == ["fail", "fail"]  # the body hash
    # forwarded (another address) and broken: DMARC fails and p=reject is honoured
    elsewhere = verify.check(
        footer, ip="192.0.2.1", helo="fwd.test", mail_from="alice@alpha.test", authserv_id="x"
    )
    assert (elsewhere.spf, elsewhere.action) == ("fail", "reject")
    assert elsewhere.reply == "550 5.7.1 Email rejected per DMARC policy for alpha.test"
    wrong = check(lab, signed(lab, "mx-beta", "bob@beta.test"), "mx-beta", "bob@beta.test")
    assert [r for r, _ in wrong.dkim] == ["fail", "fail"]  # dkimpy: no key is a failure
    assert b"header.s=gone" in wrong.header
    missing = check(
        lab, signed(lab, "mx-gamma", "carol@gamma.test"), "mx-gamma", "carol@gamma.test"
    )
    assert sorted(r for r, _ in missing.dkim) == ["fail", "fail"]  # no key published
    # sign_as: d=alpha.test passes but does not align with From: dan@delta.test
    unaligned = signed(lab, "mx-delta", "dan@delta.test")
    aligned_spf = check(lab, unaligned, "mx-delta", "dan@delta.test")
    assert set(aligned_spf.dkim) == {("pass", "alpha.test")}
    assert aligned_spf.dmarc is not None and aligned_spf.dmarc.result == "pass"  # SPF aligns
    forwarded = verify.check(
        unaligned, ip="192.0.2.1", helo="fwd.test", mail_from="dan@delta.test", authserv_id="x"
    )
    assert forwarded.dmarc is not None and forwarded.dmarc.result == "fail"


def _with_lab_resolver(lab: Lab, tmp_path: Path, argv: list[str], data: bytes) -> bytes:
    """Run ``argv`` with /etc/resolv.conf naming the lab's DNS node, in a mount
    namespace of its own (root only)."""
    if os.geteuid() != 0 or lab.dns.port != 53 or not shutil.which("unshare"):
        pytest.skip("needs root: a private resolv.conf naming the lab DNS on port 53")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {lab.dns.address}\n")
    script = f'mount --bind "{conf}" /etc/resolv.conf && exec "$@"'
    run = subprocess.run(
        ["unshare", "--mount", "--", "sh", "-c", script, "sh", *argv],
        input=data,
        capture_output=True,
        timeout=60,
    )
    if run.returncode != 0 and b"mount" in run.stderr and b"permission" in run.stderr.lower():
        pytest.skip(f"no mount namespace here: {run.stderr.decode().strip()}")
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_dkimverify_accepts_lab_signatures(lab: Lab, tmp_path: Path) -> None:
    dkimverify = Path(sys.executable).parent / "dkimverify"
    message = signed(lab, "mx-alpha", "alice@alpha.test")
    for index in ("0", "1"):  # RSA and Ed25519 (RFC 8463)
        out = _with_lab_resolver(lab, tmp_path, [str(dkimverify), "--index", index], message)
        assert b"signature ok" in out
    assert b"a=ed25519-sha256" in message and b"a=rsa-sha256" in message
    forged = message.replace(b"this body is signed", b"this body is forged")
    with pytest.raises(AssertionError):
        _with_lab_resolver(lab, tmp_path, [str(dkimverify)], forged)


def test_opendkim_accepts_lab_signatures(lab: Lab, tmp_path: Path) -> None:
    if shutil.which("opendkim-testmsg") is None:
        pytest.skip("opendkim-tools is not installed")
    config = lab.plan.nodes["mx-alpha"].config
    assert isinstance(config, RelayNodeConfig)
    rsa_only = [k for k in config.mailauth.sign["alpha.test"] if k.algorithm == "rsa-sha256"]
    message = MESSAGE.replace(b"{sender}", b"alice@alpha.test")
    message = sign.dkim_headers(message, rsa_only) + message
    _with_lab_resolver(lab, tmp_path, ["opendkim-testmsg"], message)  # silent when it verifies
    forged = message.replace(b"this body is signed", b"this body is forged")
    with pytest.raises(AssertionError):
        _with_lab_resolver(lab, tmp_path, ["opendkim-testmsg"], forged)


def test_opendkim_signatures_pass_our_checks(lab: Lab) -> None:
    if shutil.which("opendkim-testmsg") is None:
        pytest.skip("opendkim-tools is not installed")
    key = lab.dir / "dkim" / "alpha.test.rsa.key"
    message = MESSAGE.replace(b"{sender}", b"alice@alpha.test")
    run = subprocess.run(
        ["opendkim-testmsg", "-C", "-d", "alpha.test", "-s", "rsa", "-k", str(key)],
        input=message,
        capture_output=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(b"DKIM-Signature:")
    verdict = check(lab, run.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                    "mx-alpha", "alice@alpha.test")  # fmt: skip
    assert verdict.dkim == [("pass", "alpha.test")]
    assert verdict.dmarc is not None and verdict.dmarc.result == "pass"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("auth: {wrong_selector: true}", "auth: {dkim: [rsa, rsa]}", "beta.test.auth.dkim:"),
        ("auth: {sign_as: alpha.test,", "auth: {sign_as: x.test,", "sign_as: 'x.test' is not"),
        ("auth: {missing_key: true}", "auth: {dmarc: rejekt}", "did you mean 'reject'?"),
        ("users: {dan: d-secret}", "users: {dan: d}\n    forwards: {dan: [bob@beta.test]}",
         "forwards.dan: a user has this mailbox already"),
        ("users: {dan: d-secret}", "users: {dan: d}\n    forwards: {x: [y@delta.test]}",
         "forwards.x[0]: 'y@delta.test' is not an address of another domain"),
        ("ns: {kind: dns}", "ns: {kind: dns, footer: x}", "nodes.ns.footer: only relays"),
    ],
)  # fmt: skip
def test_auth_mistakes_are_located(old: str, new: str, expected: str) -> None:
    from mxlab.lab.topology import TopologyError

    assert old in TOPOLOGY
    with pytest.raises(TopologyError) as info:
        parse_topology(TOPOLOGY.replace(old, new), "t.yaml")
    assert expected in str(info.value)
