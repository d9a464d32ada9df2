"""The planner derives addresses, records, relay roles and routes from the topology."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from mxlab.lab.plan import LabPlan, make_plan, predict_route, zone_of
from mxlab.lab.topology import load_topology, parse_topology
from mxlab.nodes.config import RelayNodeConfig, StoreNodeConfig
from mxlab.nodes.passwords import verify_password

from .conftest import TOPOLOGIES


def _plan(name: str, **kw: object) -> LabPlan:
    topo = load_topology(TOPOLOGIES / f"{name}.yaml")
    return make_plan(topo, runtime="local", lab_dir=Path("/tmp/lab"), **kw)


def test_addresses_are_unique_and_in_the_subnet() -> None:
    plan = _plan("two-domains")
    net = ipaddress.ip_network(plan.subnet)
    addrs = [n.address for n in plan.nodes.values()]
    assert len(set(addrs)) == len(addrs) == 5
    assert all(ipaddress.ip_address(a) in net for a in addrs)
    assert net.subnet_of(ipaddress.ip_network("127.0.0.0/8"))
    assert plan.nodes["ns"].ports == {"dns": 5353}


def test_privileged_and_docker_use_standard_ports() -> None:
    assert _plan("two-domains", privileged=True).nodes["mx-alpha"].ports == {
        "smtp": 25,
        "submission": 587,
        "submissions": 465,
    }
    topo = load_topology(TOPOLOGIES / "two-domains.yaml")
    plan = make_plan(topo, runtime="docker", lab_dir=Path("/x"), subnet="172.29.5.0/24")
    assert plan.nodes["store-beta"].ports == {
        "lmtp": 24,
        "imap": 143,
        "pop3": 110,
        "imaps": 993,
        "pop3s": 995,
    }
    assert plan.nodes["ns"].address == "172.29.5.2"  # .1 is the bridge gateway
    assert plan.nodes["ns"].config.state_dir == "/mxlab/state"


def test_zones_have_soa_ns_a_mx_and_forward_confirmed_ptr() -> None:
    plan = _plan("two-domains")
    records = [(r.name, r.type, r.rdata) for z in plan.zones for r in z.records]
    origins = [z.origin for z in plan.zones]
    assert "alpha.test." in origins and "beta.test." in origins
    assert ("beta.test.", "MX", "10 mx-beta.beta.test.") in records
    for origin in origins:
        assert sum(1 for n, t, _ in records if n == origin and t == "SOA") == 1
    a = {n: d for n, t, d in records if t == "A"}
    ptr = {n: d for n, t, d in records if t == "PTR"}
    for node in plan.nodes.values():
        assert a[f"{node.fqdn}."] == node.address
        rev = ipaddress.ip_address(node.address).reverse_pointer + "."
        assert ptr[rev] == f"{node.fqdn}."
    assert ("alpha.test.", "TXT", '"v=spf1 mx -all"') in records


def test_relay_roles_users_and_stores() -> None:
    plan = _plan("two-domains")
    relay = plan.nodes["mx-alpha"].config
    assert isinstance(relay, RelayNodeConfig)
    assert set(relay.local_domains) == {"alpha.test"}
    assert relay.local_domains["alpha.test"].lmtp.host == plan.nodes["store-alpha"].address
    assert sorted(relay.auth_users) == ["alice@alpha.test", "carol@alpha.test"]
    assert verify_password(relay.auth_users["alice@alpha.test"], "alice-secret")
    assert not verify_password(relay.auth_users["alice@alpha.test"], "wrong")
    assert relay.dns.host == plan.nodes["ns"].address
    store = plan.nodes["store-beta"].config
    assert isinstance(store, StoreNodeConfig)
    assert sorted(store.users) == ["bob@beta.test", "dave@beta.test"]


def test_routes_direct_and_local() -> None:
    plan = _plan("two-domains")
    assert predict_route(plan, "alice@alpha.test", "bob@beta.test") == [
        {"mx-alpha.alpha.test"},
        {"mx-beta.beta.test"},
        {"store-beta.beta.test"},
    ]
    assert predict_route(plan, "bob@beta.test", "dave@beta.test") == [
        {"mx-beta.beta.test"},
        {"store-beta.beta.test"},
    ]


def test_relay_chain_routes_and_trust() -> None:
    plan = _plan("relay-chain")
    route = predict_route(plan, "alice@alpha.test", "bob@beta.test")
    assert route == [
        {"mx.alpha.test"},
        {"out.alpha.test"},
        {"edge.alpha.test"},
        {"mx.beta.test"},
        {"imap.beta.test"},
    ]
    out = plan.nodes["out-alpha"].config
    assert isinstance(out, RelayNodeConfig)
    assert out.trusted_clients == [plan.nodes["mx-alpha"].address]
    assert out.next_hop is not None and out.next_hop.host == plan.nodes["edge"].address
    # mail for alpha.test itself never leaves mx-alpha
    assert predict_route(plan, "alice@alpha.test", "carol@alpha.test")[-1] == {"imap.alpha.test"}


def test_backup_mx_is_a_relay_domain_forwarding_to_the_primary() -> None:
    plan = _plan("backup-mx")
    backup = plan.nodes["mx2-beta"].config
    assert isinstance(backup, RelayNodeConfig)
    assert backup.local_domains == {}
    assert backup.relay_domains["beta.test"].preference == 20
    assert sorted(backup.relay_domains["beta.test"].users) == ["bob", "dave"]
    primary = plan.nodes["mx1-beta"].config
    assert isinstance(primary, RelayNodeConfig)
    assert set(primary.local_domains) == {"beta.test"}
    assert plan.domains["beta.test"].mx == [(10, "mx1-beta"), (20, "mx2-beta")]


def test_send_as_reaches_only_the_submission_relay() -> None:
    text = (
        (TOPOLOGIES / "two-domains.yaml")
        .read_text()
        .replace(
            "      carol: carol-secret\n",
            "      carol: carol-secret\n    send_as:\n      alice: [postmaster@alpha.test]\n",
        )
    )
    plan = make_plan(parse_topology(text, "t.yaml"), runtime="local", lab_dir=Path("/tmp/lab"))
    alpha, beta = plan.nodes["mx-alpha"].config, plan.nodes["mx-beta"].config
    assert isinstance(alpha, RelayNodeConfig) and isinstance(beta, RelayNodeConfig)
    assert alpha.sender_aliases == {"alice@alpha.test": ["postmaster@alpha.test"]}
    assert beta.sender_aliases == {}


def test_a_name_belongs_to_the_longest_zone_that_holds_it() -> None:
    origins = {"test", "alpha.test", "mail.alpha.test"}
    assert zone_of("MX.Mail.Alpha.Test.", origins) == "mail.alpha.test"
    assert zone_of("mx.alpha.test", origins) == "alpha.test"
    assert zone_of("alpha.test", origins) == "alpha.test"
    assert zone_of("beta.test", origins) == "test"
    assert zone_of("lpha.test", {"alpha.test"}) is None  # a label, not a string suffix
    assert zone_of("example.org", origins) is None
