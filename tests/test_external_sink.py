"""Peers outside the lab and SMTP sinks (issue 16): a lab whose MX is an external node
pointing at a sink on the host (``mxlab sink serve``), a relay whose next hop is that
external node, and a sink node inside the lab; each delivery proven by the sink's
record. One local lab for the module."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import mxlab
from mxlab.lab.checks import split_trace
from mxlab.lab.errors import LabError
from mxlab.lab.sink import Sink
from mxlab.lab.topology import TopologyError, parse_topology
from mxlab.nodes.sink.record import keep, messages
from tests.conftest import needs_docker, wait_for

LAB = "sinks"
MXLAB = [sys.executable, "-c", "from mxlab.cli import main; main()"]


def topology(port: int) -> dict:
    return {
        "name": LAB,
        "nodes": {
            "ns": {"kind": "dns"},
            "mx": {"kind": "relay"},
            "smart": {"kind": "relay", "next_hop": "hostsink"},
            "store": {"kind": "store"},
            "catch": {"kind": "sink"},
            "hostsink": {"kind": "external", "address": "host", "ports": {"smtp": port}},
        },
        "domains": {
            "alpha.test": {"store": "store", "mx": [{"node": "mx"}], "users": {"alice": "a-pw"}},
            "beta.test": {
                "store": "store",
                "mx": [{"node": "smart"}],
                "users": {"bob": "b-pw"},
            },
            "outside.test": {"mx": [{"node": "hostsink"}]},
            "caught.test": {"mx": [{"node": "catch"}]},
        },
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_sink(address: str, port: int, record: Path) -> subprocess.Popen[bytes]:
    """``mxlab sink serve`` on this machine, once it greets."""
    serve = [*MXLAB, "sink", "serve", "--dir", str(record), "--listen", f"{address}:{port}"]
    host = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _greets(address, port), what="the host sink's greeting")
    return host


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[mxlab.Lab, Sink]]:
    """The lab, and the record of the sink it reaches on the host."""
    tmp = tmp_path_factory.mktemp("sinks")
    port = _free_port()
    host = host_sink("127.0.0.1", port, tmp / "hostsink")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MXLAB_HOME", str(tmp / "mxlab-home"))
        try:
            with mxlab.Lab.up(topology(port), runtime="local") as running:
                yield running, Sink(tmp / "hostsink")
        finally:
            host.terminate()
            host.wait(10)


def _greets(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as sock:
            return sock.recv(100).startswith(b"220")
    except OSError:
        return False


def test_mx_outside_the_lab_takes_mail(lab: tuple[mxlab.Lab, Sink]) -> None:
    """A lab domain whose MX is an external sink on the host: the sink's record holds
    the message, its envelope and the bytes submitted (below the relay's trace)."""
    running, host = lab
    sent = running.send("alice@alpha.test", ["carol@outside.test"], subject="to the host")
    kept = host.wait_for(sent.message_id, timeout=30)
    assert kept.mail_from == "alice@alpha.test"
    assert kept.rcpt_tos == ["carol@outside.test"]
    hops, body = split_trace(kept.data)
    assert body == sent.data
    assert hops == ["mx.alpha.test"]
    assert kept.peer == running.plan.nodes["mx"].address
    assert kept.tls is None  # `mxlab sink serve` has no certificate: no STARTTLS offered


def test_next_hop_outside_the_lab(lab: tuple[mxlab.Lab, Sink]) -> None:
    """A relay's next hop may be an external node: mail for any other domain goes there."""
    running, host = lab
    sent = running.send("bob@beta.test", ["dan@elsewhere.test"])
    kept = host.wait_for(sent.message_id, timeout=30)
    assert kept.rcpt_tos == ["dan@elsewhere.test"]
    assert split_trace(kept.data) == (["smart.beta.test"], sent.data)


def test_sink_node_keeps_mail(lab: tuple[mxlab.Lab, Sink]) -> None:
    """A sink inside the lab keeps what reaches it; Lab.sink reads its record, and the
    expect_sink check step passes for it (and fails for mail that went elsewhere)."""
    running, host = lab
    sent = running.send("alice@alpha.test", ["x@caught.test", "y@caught.test"])
    kept = running.sink("catch").wait_for(sent.message_id, timeout=30)
    assert sorted(kept.rcpt_tos) == ["x@caught.test", "y@caught.test"]
    # the sink node has a lab-CA certificate and offers STARTTLS, which the relay takes
    assert kept.tls == "TLSv1.3"
    assert split_trace(kept.data)[1] == sent.data
    trace = [(e.node, e.event) for e in running.trace(sent.message_id)]
    assert ("catch", "sink.kept") in trace
    outcome = running.run_checks(
        [
            {"send": {"id": "m1", "from": "alice@alpha.test", "to": ["z@caught.test"]}},
            {"expect_sink": {"id": "m1", "node": "catch", "within": 30, "tls": True}},
        ]
    )
    assert outcome.ok, outcome.steps
    outcome = running.run_checks(
        [
            {"send": {"id": "m3", "from": "alice@alpha.test", "to": ["v@caught.test"]}},
            {"expect_sink": {"id": "m3", "node": "catch", "within": 30, "tls": False}},
        ]
    )
    assert not outcome.ok
    assert "received it over TLSv1.3" in str(outcome.steps)
    outcome = running.run_checks(
        [
            {"send": {"id": "m2", "from": "alice@alpha.test", "to": ["w@outside.test"]}},
            {"expect_sink": {"id": "m2", "node": "catch", "within": 2}},
        ]
    )
    assert not outcome.ok
    with pytest.raises(LabError, match="no sink node 'mx'"):
        running.sink("mx")


def test_status_and_cli_show_the_outside(lab: tuple[mxlab.Lab, Sink]) -> None:
    running, host = lab
    states = {s.node: s.state for s in running.status()}
    assert states["hostsink"] == "external"
    assert states["catch"] == "running"
    with pytest.raises(LabError, match="external"):
        running.start("hostsink")
    sent = running.send("alice@alpha.test", ["listed@outside.test"])
    host.wait_for(sent.message_id, timeout=30)
    listed = subprocess.run(
        [*MXLAB, "sink", "list", "--dir", str(host.directory)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=True,
    ).stdout
    assert f"to listed@outside.test  plaintext  {sent.message_id}" in listed


def test_record_is_durable_and_private(tmp_path: Path) -> None:
    """Each message is two 0600 files; a message whose envelope is not yet in place
    (a crash between the renames) is not listed."""
    keep(tmp_path, "a@x.test", ["b@y.test"], "127.0.0.1", b"Subject: one\r\n\r\nbody\r\n")
    keep(tmp_path, "c@x.test", ["d@y.test"], "127.0.0.2", b"Subject: two\r\n\r\n", "TLSv1.3")
    (tmp_path / "orphan.eml").write_bytes(b"half")
    found = messages(tmp_path)
    assert [(m.mail_from, m.rcpt_tos, m.data, m.tls) for m in found] == [
        ("a@x.test", ["b@y.test"], b"Subject: one\r\n\r\nbody\r\n", None),
        ("c@x.test", ["d@y.test"], b"Subject: two\r\n\r\n", "TLSv1.3"),
    ]
    for path in tmp_path.glob(f"{found[0].id}.*"):
        assert path.stat().st_mode & 0o777 == 0o600


BASE = yaml.safe_dump(topology(2526))


@pytest.mark.parametrize(
    ("edit", "field", "expect"),
    [
        (("hostsink", {"address": None}), "nodes.hostsink.address", "needs the address"),
        (("hostsink", {"address": "my-laptop"}), "nodes.hostsink.address", "not an IPv4"),
        (("mx", {"address": "10.0.0.9"}), "nodes.mx.address", "only external nodes"),
        (("store", {"ports": {"imap": 1143}}), "nodes.store.ports", "only external nodes"),
        (("catch", {"next_hop": "mx"}), "nodes.catch.next_hop", "only relays"),
        (("mx", {"next_hop": "store"}), "nodes.mx.next_hop", "no relay named 'store'"),
        (("store", {"resolver": "ns"}), "nodes.store.resolver", "only relays"),
        (("mx", {"resolver": "ns"}), "nodes.mx.resolver", "need a resolver"),
    ],
)
def test_bad_outside_specs_are_one_line(
    edit: tuple[str, dict[str, object]], field: str, expect: str
) -> None:
    data = yaml.safe_load(BASE)
    node, change = edit
    for key, value in change.items():
        if value is None:
            data["nodes"][node].pop(key)
        else:
            data["nodes"][node][key] = value
    with pytest.raises(TopologyError) as err:
        parse_topology(yaml.safe_dump(data), "sinks.yaml")
    line = str(err.value)
    assert line.startswith(f"sinks.yaml: {field}: ") and expect in line, line
    assert "\n" not in line


def test_domains_leaving_the_lab_have_no_mailboxes() -> None:
    data = yaml.safe_load(BASE)
    data["domains"]["outside.test"]["users"] = {"carol": "pw"}
    with pytest.raises(TopologyError, match="domains.outside.test.users: .*no mailboxes"):
        parse_topology(yaml.safe_dump(data), "sinks.yaml")
    data = yaml.safe_load(BASE)
    del data["domains"]["alpha.test"]["store"]
    with pytest.raises(TopologyError, match=r"alpha.test.store: required .* \(add it: mx "):
        parse_topology(yaml.safe_dump(data), "sinks.yaml")
    data = yaml.safe_load(BASE)
    data["checks"] = [
        {"send": {"id": "m", "from": "alice@alpha.test", "to": ["a@caught.test"]}},
        {"expect_sink": {"id": "m", "node": "hostsink"}},
    ]
    with pytest.raises(TopologyError, match=r"checks\[1\].node: 'hostsink' is of kind external"):
        parse_topology(yaml.safe_dump(data), "sinks.yaml")


class TestDocker:
    pytestmark = needs_docker

    def test_docker_lab_reaches_the_host_and_its_sink(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Under docker, ``address: host`` is the lab network's gateway: a sink listening
        there on the host takes the MX's mail, and a sink container keeps its own."""
        monkeypatch.setenv("MXLAB_HOME", str(tmp_path / "mxlab-home"))
        port = _free_port()
        with mxlab.Lab.up(topology(port), runtime="docker") as running:
            gateway = running.plan.nodes["hostsink"].address
            assert gateway == str(next(ipaddress.ip_network(running.plan.subnet).hosts()))
            host = host_sink(gateway, port, tmp_path / "hostsink")
            try:
                sent = running.send("alice@alpha.test", ["carol@outside.test", "x@caught.test"])
                kept = Sink(tmp_path / "hostsink").wait_for(sent.message_id, timeout=30)
                assert kept.rcpt_tos == ["carol@outside.test"]
                assert kept.peer == running.plan.nodes["mx"].address
                inside = running.sink("catch").wait_for(sent.message_id, timeout=30)
                assert split_trace(inside.data) == (["mx.alpha.test"], sent.data)
                assert ("catch", "sink.kept") in [
                    (e.node, e.event) for e in running.trace(sent.message_id)
                ]  # the trace reads the lab's nodes, not the server outside it
            finally:
                host.terminate()
                host.wait(10)


def test_postfix_reaches_an_mx_outside_on_its_port(tmp_path: Path) -> None:
    """A Postfix relay knows no per-host SMTP port: a domain whose MX is outside the
    lab on a port of its own gets a transport entry to it (none behind a next hop)."""
    from mxlab.lab.kinds.postfix import outside_mx, transport
    from mxlab.lab.plan import make_plan
    from mxlab.nodes.config import RelayNodeConfig

    data = topology(2626)
    data["nodes"]["mx"]["kind"] = data["nodes"]["smart"]["kind"] = "postfix"
    plan = make_plan(parse_topology(yaml.safe_dump(data)), runtime="local", lab_dir=tmp_path)
    mx, smart = plan.nodes["mx"].config, plan.nodes["smart"].config
    assert isinstance(mx, RelayNodeConfig) and isinstance(smart, RelayNodeConfig)
    assert "outside.test smtp:[127.0.0.1]:2626\n" in transport(mx, outside_mx(plan, mx))
    assert "outside.test" not in transport(smart, outside_mx(plan, smart))
    assert smart.next_hop is not None and (smart.next_hop.host, smart.next_hop.port) == (
        "127.0.0.1",
        2626,
    )
