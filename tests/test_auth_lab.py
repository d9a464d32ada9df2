"""Mail authentication in a running lab (topologies/auth.yaml, local runtime), from
outside the lab's own clients: a message OpenDKIM signed passes the relay's checks, a
spoof of a p=reject domain is refused at DATA with RFC 7489's reply, and a forged
quarantine mark or Authentication-Results in our name is dropped. (The shipped
scenarios dmarc-reject, footer-arc and forward-srs run in test_lab_scenario.)"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import mxlab
from mxlab.lab import labdir
from mxlab.lab.checks import auth_methods, auth_results
from mxlab.lab.mail import imap_messages
from mxlab.lab.plan import LabPlan

from .conftest import TOPOLOGIES, wait_for

LAB = "authlab"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabPlan]:
    home = tmp_path_factory.mktemp("auth") / "mxlab-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MXLAB_HOME", str(home))
        mxlab.Lab.up(TOPOLOGIES / "auth.yaml", runtime="local", name=LAB)
        try:
            yield labdir.read_plan(LAB)
        finally:
            mxlab.down(LAB)


def message(tag: str, sender: str = "alice@alpha.test", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: bob@beta.test\r\nSubject: {tag}\r\n"
        f"Date: Tue, 01 Dec 2026 03:00:00 +0000\r\nMessage-ID: <{tag}@outside.test>\r\n"
        f"{extra}\r\nfrom outside the lab\r\n"
    ).encode()


def mx_session(plan: LabPlan, node: str) -> smtplib.SMTP:
    """A client outside the lab at a lab MX (port 25, no login)."""
    relay = plan.nodes[node]
    smtp = smtplib.SMTP(relay.address, relay.ports["smtp"], timeout=20)
    smtp.ehlo("client.outside.test")
    return smtp


def copy_of(plan: LabPlan, tag: str, folder: str = "INBOX") -> bytes:
    def found() -> bytes | None:
        hits = [m for m in imap_messages(plan, "bob@beta.test", folder) if tag.encode() in m]
        return hits[0] if hits else None

    raw: bytes = wait_for(found, timeout=20, what=f"{tag} in bob's {folder}")
    return raw


def test_opendkim_signed_mail_passes_at_our_relay(plan: LabPlan, tmp_path: Path) -> None:
    if shutil.which("opendkim-testmsg") is None:
        pytest.skip("opendkim-tools is not installed")
    key = Path(plan.lab_dir) / "dkim" / "alpha.test.rsa.key"
    signer = ["opendkim-testmsg", "-C", "-d", "alpha.test", "-s", "rsa", "-k", str(key)]
    run = subprocess.run(signer, input=message("odkim"), capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    signed = run.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with mx_session(plan, "mx-beta") as smtp:
        smtp.sendmail("alice@alpha.test", ["bob@beta.test"], signed)
    header = auth_results(copy_of(plan, "odkim"))
    assert header is not None and header.startswith("mx-beta.beta.test;"), header
    got = auth_methods(header)
    # not sent from alpha's relay: SPF fails; OpenDKIM's signature aligns, so DMARC passes
    assert (got["spf"], got["dkim"], got["dmarc"]) == (["fail"], ["pass"], ["pass"]), header


def test_spoof_of_a_reject_domain_is_refused_at_data(plan: LabPlan) -> None:
    with mx_session(plan, "mx-beta") as smtp, pytest.raises(smtplib.SMTPDataError) as info:
        smtp.sendmail("spoofer@outside.test", ["bob@beta.test"], message("spoof"))
    assert info.value.smtp_code == 550
    assert info.value.smtp_error == b"5.7.1 Email rejected per DMARC policy for alpha.test"


def test_forged_marks_and_results_are_dropped(plan: LabPlan) -> None:
    fake = "X-Mxlab-Quarantine: yes\r\nAuthentication-Results: mx-beta.beta.test;\r\n dkim=pass\r\n"
    forged = message("forged", sender="eve@outside.test", extra=fake)
    with mx_session(plan, "mx-beta") as smtp:
        smtp.sendmail("eve@outside.test", ["bob@beta.test"], forged)
    raw = copy_of(plan, "forged")
    assert b"X-Mxlab-Quarantine" not in raw
    assert raw.count(b"Authentication-Results: mx-beta.beta.test;") == 1  # ours (RFC 8601 §5)
    got = auth_methods(auth_results(raw) or "")
    # the lab's DNS refuses names outside the lab: a DNS error (RFC 7208 §2.6.6)
    assert got["spf"] == ["temperror"] and got["dkim"] == ["none"], raw[:600]


def test_a_bounce_to_an_srs_sender_reaches_the_real_one(plan: LabPlan) -> None:
    """delta.test forwards with SRS: a bounce to its SRS0 address (from a host further
    on) is taken at RCPT and goes to the original sender; a forged one is refused."""
    import srslib

    secret = (Path(plan.lab_dir) / "nodes" / "mx-delta" / "auth" / "srs.secret").read_text()
    srs = srslib.SRS(secret.strip()).forward("alice@alpha.test", "delta.test")
    assert srs.startswith("SRS0=") and srs.endswith("@delta.test")
    dsn = message("srsback", sender="MAILER-DAEMON@mx-beta.beta.test").replace(
        b"To: bob@beta.test", f"To: {srs}".encode()
    )
    with mx_session(plan, "mx-delta") as smtp:
        smtp.sendmail("", [srs], dsn)
        forged = "SRS0=AAAA=" + srs.split("=", 2)[2]
        assert smtp.mail("")[0] == 250
        assert smtp.rcpt(forged)[0] == 550

    def arrived() -> bool:
        return any(b"srsback" in m for m in imap_messages(plan, "alice@alpha.test"))

    wait_for(arrived, timeout=20, what="the bounce in alice's INBOX")
