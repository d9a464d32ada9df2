"""MX resolution against a dnslib DNS stub on loopback (RFC 5321 §5.1, RFC 7505)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.nodes.config import Endpoint, LocalDomain, RelayDomain
from mxlab.nodes.relay.routing import Hop, RouteError, Router, is_null_mx, order_mx
from tests.test_relay_support import DnsStub, relay_config

ZONE = """
beta.test.       300 IN MX 10 mx1.beta.test.
beta.test.       300 IN MX 20 mx2.beta.test.
beta.test.       300 IN MX 30 mx3.beta.test.
mx1.beta.test.   300 IN A 127.30.1.1
mx2.beta.test.   300 IN A 127.30.1.2
mx3.beta.test.   300 IN A 127.30.1.3
bare.test.       300 IN A 127.30.1.9
null.test.       300 IN MX 0 .
noaddr.test.     300 IN MX 10 ghost.noaddr.test.
self.test.       300 IN MX 10 me.self.test.
me.self.test.    300 IN A 127.30.1.100
"""


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsStub]:
    stub = DnsStub(ZONE)
    yield stub
    stub.stop()


def hops(router: Router, domain: str) -> list[Hop]:
    return asyncio.run(router.hops(domain))


def route_error(router: Router, domain: str) -> str:
    with pytest.raises(RouteError) as info:
        hops(router, domain)
    return info.value.reply


def test_mx_hosts_are_tried_by_preference(dns: DnsStub, tmp_path: Path) -> None:
    router = Router(relay_config(tmp_path, dns=dns.endpoint, remote_smtp_port=2626))
    assert [(h.name, h.address, h.port) for h in hops(router, "beta.test")] == [
        ("mx1.beta.test", "127.30.1.1", 2626),
        ("mx2.beta.test", "127.30.1.2", 2626),
        ("mx3.beta.test", "127.30.1.3", 2626),
    ]


def test_backup_mx_only_tries_better_preferences(dns: DnsStub, tmp_path: Path) -> None:
    backup = {"beta.test": RelayDomain(users=["bob"], preference=30)}
    router = Router(relay_config(tmp_path, dns=dns.endpoint, relay_domains=backup))
    assert [h.name for h in hops(router, "beta.test")] == ["mx1.beta.test", "mx2.beta.test"]
    best = {"beta.test": RelayDomain(users=["bob"], preference=10)}
    router = Router(relay_config(tmp_path, dns=dns.endpoint, relay_domains=best))
    assert route_error(router, "beta.test").startswith("554 5.4.6")


def test_no_mx_falls_back_to_the_domain_address(dns: DnsStub, tmp_path: Path) -> None:
    router = Router(relay_config(tmp_path, dns=dns.endpoint))
    assert [(h.name, h.address) for h in hops(router, "bare.test")] == [("bare.test", "127.30.1.9")]


def test_null_mx_and_missing_domains_bounce(dns: DnsStub, tmp_path: Path) -> None:
    router = Router(relay_config(tmp_path, dns=dns.endpoint))
    assert route_error(router, "null.test").startswith("556 5.1.10")
    assert route_error(router, "nowhere.test").startswith("550 5.1.2")
    assert route_error(router, "noaddr.test").startswith("550 5.4.4")


def test_an_mx_pointing_at_ourselves_is_a_loop(dns: DnsStub, tmp_path: Path) -> None:
    router = Router(relay_config(tmp_path, dns=dns.endpoint, address="127.30.1.100"))
    assert route_error(router, "self.test").startswith("554 5.4.6")


def test_unreachable_dns_defers(tmp_path: Path) -> None:
    router = Router(relay_config(tmp_path, dns=Endpoint(host="127.30.255.254", port=5353)))
    router.resolver.lifetime = 0.5
    assert route_error(router, "beta.test").startswith("451 4.4.3")


def test_local_domains_go_to_the_store_and_others_to_the_smarthost(tmp_path: Path) -> None:
    lmtp = Endpoint(host="127.30.1.20", port=2424)
    smarthost = Endpoint(host="127.30.1.21", port=2525)
    config = relay_config(
        tmp_path,
        local_domains={"alpha.test": LocalDomain(lmtp=lmtp, users=["alice"])},
        next_hop=smarthost,
    )
    router = Router(config)
    assert hops(router, "alpha.test") == [Hop("127.30.1.20", "127.30.1.20", 2424, lmtp=True)]
    assert hops(router, "beta.test") == [Hop("127.30.1.21", "127.30.1.21", 2525)]
    assert router.destination("alpha.test") != router.destination("beta.test")
    assert router.destination("beta.test") == router.destination("gamma.test")


def test_equal_preferences_are_shuffled() -> None:
    records = [(10, "a"), (10, "b"), (10, "c"), (5, "first"), (20, "last")]
    orders = {tuple(order_mx(records, rng=random.Random(seed))) for seed in range(50)}
    assert all(o[0] == "first" and o[-1] == "last" for o in orders)
    assert len(orders) > 1


def test_null_mx_is_recognised() -> None:
    assert is_null_mx([(0, ".")])
    assert not is_null_mx([(0, "."), (10, "mx.test")])
    assert not is_null_mx([(10, "mx.test")])
