"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): the policy parser against the RFC's
examples (sans-IO), the policy host's responder, the topology switch's errors, and a
running lab (topologies/mta-sts.yaml, local runtime): records in the zone, the policy
served over HTTPS with the lab CA's certificate for mta-sts.<domain>, delivery under
an enforced policy, a broken enforced policy keeping the mail queued, and testing mode
delivering all the same."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mxlab
from mxlab.lab import pki
from mxlab.lab.errors import TopologyError
from mxlab.lab.plan import make_plan
from mxlab.lab.topology import load_topology, parse_topology
from mxlab.lab.trace import Event
from mxlab.nodes.mailauth.mtasts import result_type, verifying_context
from mxlab.nodes.mailauth.policy_server import respond
from mxlab.nodes.mailauth.sts_policy import (
    PolicyError,
    parse_policy,
    parse_txt,
    policy_id,
    render_policy,
)
from mxlab.nodes.relay.client import Client, ReplyError

from .conftest import TOPOLOGIES, wait_for

# RFC 8461 §3.2's example policy, LF line ends as many servers send it
RFC_POLICY = """version: STSv1
mode: enforce
mx: mail.example.com
mx: *.example.net
mx: backupmx.example.com
max_age: 604800
"""


def test_rfc_example_policy_parses_and_matches_mx_hosts() -> None:
    policy = parse_policy(RFC_POLICY)
    assert (policy.mode, policy.max_age) == ("enforce", 604800)
    assert policy.mx == ("mail.example.com", "*.example.net", "backupmx.example.com")
    assert parse_policy(RFC_POLICY.replace("\n", "\r\n")) == policy  # CRLF too
    # §4.1: a wildcard stands for exactly one leftmost label; names are case-blind
    assert policy.matches("MAIL.example.com.")
    assert policy.matches("mx1.example.net")
    assert not policy.matches("example.net")
    assert not policy.matches("foo.mx1.example.net")
    assert not policy.matches("mail.example.org")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (RFC_POLICY.replace("STSv1", "STSv2"), "version"),
        (RFC_POLICY.replace("enforce", "strict"), "mode"),
        (RFC_POLICY.replace("604800", "31557601"), "max_age"),
        (RFC_POLICY.replace("604800", "-1"), "max_age"),
        ("version: STSv1\nmode: enforce\nmax_age: 60\n", "mx"),
        (RFC_POLICY + "no colon here\n", "colon"),
    ],
)
def test_bad_policies_are_refused(text: str, field: str) -> None:
    with pytest.raises(PolicyError, match=field):
        parse_policy(text)


def test_unknown_fields_are_ignored_and_mode_none_needs_no_mx() -> None:
    assert parse_policy(RFC_POLICY + "extension: 1\n").mx[0] == "mail.example.com"
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").mx == ()


def test_txt_record_id() -> None:
    # RFC 8461 §3.1's example record
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt(["v=spf1 -all", "v=STSv1; id=abc"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two: none
    assert parse_txt(["v=STSv1;"]) is None
    assert parse_txt(["v=STSv1; id=not-alnum"]) is None
    assert parse_txt(["v=STSv1; id=" + "a" * 33]) is None


def test_rendered_policy_round_trips_and_its_id_follows_it() -> None:
    text = render_policy("testing", ["mx.beta.test", "*.beta.test"], 3600)
    policy = parse_policy(text)
    assert (policy.mode, policy.mx, policy.max_age) == (
        "testing",
        ("mx.beta.test", "*.beta.test"),
        3600,
    )
    other = render_policy("enforce", ["mx.beta.test", "*.beta.test"], 3600)
    assert policy_id(text) != policy_id(other)
    assert parse_txt([f"v=STSv1; id={policy_id(text)}"]) == policy_id(text)


POLICIES = {"beta.test": "version: STSv1\r\nmode: none\r\nmax_age: 60\r\n"}


def _get(host: str, path: str = "/.well-known/mta-sts.txt", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def test_policy_host_answers_get_of_the_well_known_path_only() -> None:
    ok = respond(_get("mta-sts.beta.test:2443"), POLICIES)
    assert ok is not None and ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain" in ok and ok.endswith(POLICIES["beta.test"].encode())
    for request in (
        _get("mta-sts.beta.test", "/"),
        _get("mta-sts.alpha.test"),
        _get("beta.test"),
        _get("mta-sts.beta.test", method="POST"),
    ):
        answer = respond(request, POLICIES)
        assert answer is not None and answer.startswith(b"HTTP/1.1 404 "), request
    assert respond(_get("mta-sts.beta.test")[:-2], POLICIES) is None  # not complete yet
    assert respond(b"", POLICIES) is None
    assert respond(b"\x16\x03\x01 not http\r\n\r\n", POLICIES) == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


SMALL = """
name: sts
nodes:
  ns: {kind: dns}
  mx: {kind: relay}
  store: {kind: store}
domains:
  beta.test:
    store: store
    mx: [{node: mx}]
    users: {bob: bob-secret}
    auth: {mta_sts: STS}
"""


@pytest.mark.parametrize(
    ("sts", "field", "says"),
    [
        ("{node: store}", "auth.mta_sts.node", "'store' is a store"),
        ("{node: nope}", "auth.mta_sts.node", "no node named 'nope'"),
        ("{node: mx, mx: ['mx..beta.test']}", "auth.mta_sts.mx[0]", "not an MX host"),
        ("{node: mx, report_to: nobody}", "auth.mta_sts.report_to", "not a mail address"),
        ("{node: mx, mode: strict}", "auth.mta_sts.mode", "not one of"),
        ("{node: mx, max_age: 99999999}", "auth.mta_sts.max_age", "less than or equal"),
    ],
)
def test_topology_mistakes_are_located(sts: str, field: str, says: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse_topology(SMALL.replace("STS", sts), "t.yaml")
    line = str(err.value)
    assert f"domains.beta.test.{field}" in line and says in line, line


def test_plan_publishes_records_and_gives_the_serving_relay_its_policies() -> None:
    topo = load_topology(TOPOLOGIES / "mta-sts.yaml")
    plan = make_plan(topo, runtime="docker", lab_dir=Path("/x"), subnet="172.29.9.0/24")
    records = {(r.name, r.type): r.rdata for z in plan.zones for r in z.records}
    beta = plan.nodes["mx-beta"]
    served = beta.config.mta_sts.policies  # type: ignore[union-attr]
    assert records[("mta-sts.beta.test.", "A")] == beta.address
    assert records[("_mta-sts.beta.test.", "TXT")] == (
        f'"v=STSv1; id={policy_id(served["beta.test"])}"'
    )
    assert records[("_smtp._tls.beta.test.", "TXT")] == '"v=TLSRPTv1; rua=mailto:bob@beta.test"'
    assert parse_policy(served["beta.test"]).mx == ("mx-beta.beta.test",)
    assert parse_policy(served["gamma.test"]).mx == ("mx.elsewhere.test",)  # the override
    assert beta.ports["https"] == 443 and "https" not in plan.nodes["mx-alpha"].ports
    assert ("_mta-sts.alpha.test.", "TXT") not in records  # off unless asked


# -- a running lab --------------------------------------------------------------------

LAB = "stslab"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mxlab.Lab]:
    home = tmp_path_factory.mktemp("sts") / "mxlab-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MXLAB_HOME", str(home))
        with mxlab.Lab.up(TOPOLOGIES / "mta-sts.yaml", runtime="local", name=LAB) as running:
            yield running


def _fetch(lab: mxlab.Lab, host: str) -> tuple[int, bytes]:
    """GET the policy as any HTTPS client trusting the lab CA would."""
    node = lab.plan.nodes["mx-beta"]
    context = ssl.create_default_context(cafile=str(lab.ca_file))
    with (
        socket.create_connection((node.address, node.ports["https"]), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        sock.sendall(_get(host))
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def test_lab_zone_and_policy_over_https(lab: mxlab.Lab) -> None:
    rcode, answers = lab.dns("_mta-sts.beta.test", "TXT")
    assert rcode == "NOERROR" and answers[0].startswith('"v=STSv1; id=')
    assert lab.dns("mta-sts.beta.test") == ("NOERROR", [lab.plan.nodes["mx-beta"].address])
    assert lab.dns("_smtp._tls.gamma.test", "TXT")[1] == [
        '"v=TLSRPTv1; rua=mailto:carol@gamma.test"'
    ]
    status, body = _fetch(lab, "mta-sts.beta.test")
    assert status == 200 and parse_policy(body.decode()).mx == ("mx-beta.beta.test",)
    assert answers[0] == f'"v=STSv1; id={policy_id(body.decode())}"'
    # the certificate names each policy host, and no other lab domain's
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _fetch(lab, "mta-sts.alpha.test")


def _events(lab: mxlab.Lab, since: float, event: str, **fields: object) -> list[Event]:
    return [
        e
        for e in lab.events(since)
        if e.event == event and all(e.fields.get(k) == v for k, v in fields.items())
    ]


def test_enforced_policy_delivers_to_its_mx_over_verified_tls(lab: mxlab.Lab) -> None:
    since = time.time()
    sent = lab.send("alice@alpha.test", ["bob@beta.test", "erin@epsilon.test"], subject="sts")
    results = lab.delivered(sent)
    assert len(results) == 2 and all(r.ok for r in results), results
    fetched = _events(lab, since, "mta_sts_policy", domain="beta.test")
    assert fetched and fetched[0].node == "mx-alpha" and fetched[0].fields["mode"] == "enforce"
    assert not [e for e in lab.events(since) if e.event == "tls_failure"]


def test_policy_naming_other_mx_keeps_mail_queued_and_testing_mode_delivers(
    lab: mxlab.Lab,
) -> None:
    since = time.time()
    held = lab.send("alice@alpha.test", ["carol@gamma.test"], subject="sts broken")
    tried = lab.send("alice@alpha.test", ["dan@delta.test"], subject="sts testing")
    assert all(r.ok for r in lab.delivered(tried)), "testing mode must deliver"
    deferred = wait_for(
        lambda: _events(lab, since, "deferred", to="carol@gamma.test"), 20, "carol deferred"
    )
    assert (
        "451 4.7.5 MTA-STS: no MX host of gamma.test matches its policy"
        in (deferred[0].fields["status"])
    )
    failure = _events(lab, since, "tls_failure", domain="gamma.test")[0].fields
    assert (failure["result_type"], failure["mode"], failure["mx"]) == (
        "validation-failure",
        "enforce",
        "mx-beta.beta.test",
    )
    testing = _events(lab, since, "tls_failure", domain="delta.test")[0].fields
    assert (testing["result_type"], testing["mode"]) == ("validation-failure", "testing")
    queued = [m for m in lab.queue("mx-alpha") if held.message_id in str(m)]
    assert queued and "carol@gamma.test" in str(queued[0]), lab.queue("mx-alpha")
    assert not _events(lab, since, "bounced", to="carol@gamma.test")


def test_enforced_policy_defers_when_the_mx_certificate_is_invalid(lab: mxlab.Lab) -> None:
    """Last: it breaks mx-beta's certificate. The sender keeps its cached policy
    (RFC 8461 §5.1: the new one cannot be fetched, the cached one holds) and will not
    deliver over the expired certificate; testing mode still delivers."""
    lab.cert_renew("mx-beta", expired=True)
    since = time.time()
    held = lab.send("alice@alpha.test", ["bob@beta.test"], subject="sts expired")
    deferred = wait_for(
        lambda: _events(lab, since, "deferred", to="bob@beta.test"), 20, "bob deferred"
    )
    assert "certificate not valid: certificate has expired" in deferred[0].fields["status"]
    failure = _events(lab, since, "tls_failure", domain="beta.test")[0].fields
    assert (failure["result_type"], failure["mx"]) == ("certificate-expired", "mx-beta.beta.test")
    assert [m for m in lab.queue("mx-alpha") if held.message_id in str(m)]
    tried = lab.send("alice@alpha.test", ["erin@epsilon.test"], subject="sts testing expired")
    assert all(r.ok for r in lab.delivered(tried)), "testing mode must deliver"
    testing = _events(lab, since, "tls_failure", domain="epsilon.test")[0].fields
    assert (testing["result_type"], testing["mode"]) == ("certificate-expired", "testing")


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("451 4.4.1 mx: ConnectionError: certificate not valid: certificate has expired",
         "certificate-expired"),
        ("451 4.4.1 mx: ConnectionError: certificate not valid: Hostname mismatch, ...",
         "certificate-host-mismatch"),
        ("451 4.4.1 mx: ConnectionError: certificate not valid: self-signed certificate",
         "certificate-not-trusted"),
        ("451 4.4.1 mx refused the session: mx offers no STARTTLS, and TLS is required",
         "starttls-not-supported"),
        ("451 4.4.1 mx: ConnectionRefusedError: [Errno 111] Connection refused", ""),
    ],
)  # fmt: skip
def test_tls_rpt_result_types(reply: str, kind: str) -> None:
    assert result_type(reply) == kind  # RFC 8460 §4.3


async def _mx(ca_dir: Path, starttls: bool) -> asyncio.Server:
    """An MX that greets, offers STARTTLS (or not) with a lab-CA certificate for
    mx.beta.test, and says EHLO again over TLS."""
    ca = pki.ensure_ca(ca_dir, "t")
    pki.issue(ca, "mx.beta.test", "127.0.0.1", ca_dir / "cert.pem", ca_dir / "key.pem")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(ca_dir / "cert.pem", ca_dir / "key.pem")

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            writer.write(b"220 mx.beta.test ESMTP\r\n")
            await reader.readline()
            writer.write(b"250-mx.beta.test\r\n250 STARTTLS\r\n" if starttls else b"250 mx\r\n")
            if await reader.readline() == b"STARTTLS\r\n":
                writer.write(b"220 2.0.0 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(server_tls)
                await reader.readline()
                writer.write(b"250 mx.beta.test\r\n")
                await reader.readline()
        writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("starttls", "name", "error"),
    [
        (True, "mx.beta.test", None),
        (True, "mx2.beta.test", "certificate not valid: Hostname mismatch"),
        (False, "mx.beta.test", "offers no STARTTLS, and TLS is required"),
    ],
)
def test_verified_starttls_checks_the_mx_name(
    tmp_path: Path, starttls: bool, name: str, error: str | None
) -> None:
    """RFC 8461 §4.2 with our SMTP client: the certificate must be valid for the MX
    host's name, and a host offering no STARTTLS is refused."""

    async def run() -> None:
        server = await _mx(tmp_path, starttls)
        port = server.sockets[0].getsockname()[1]
        tls = verifying_context(str(tmp_path / "ca.pem"), name)
        try:
            client = await Client.open("127.0.0.1", port, helo="mx.alpha.test", tls=tls)
            assert error is None
            assert client.writer.get_extra_info("peercert") is not None  # TLS is on
            client.close()
        except (ConnectionError, ReplyError) as exc:
            assert error is not None and error in str(exc), exc
        finally:
            server.close()

    asyncio.run(run())
