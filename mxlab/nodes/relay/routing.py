"""Where a recipient's mail goes next: the store by LMTP, a smarthost, or the
domain's MX hosts found in the lab DNS (RFC 5321 §5.1)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from mxlab.nodes.config import RelayNodeConfig

MAX_ADDRESSES = 5  # Postfix's smtp_mx_address_limit


@dataclass(frozen=True)
class Hop:
    """One host to try; ``name`` is what logs and DSNs show."""

    name: str
    address: str
    port: int
    lmtp: bool = False


class RouteError(Exception):
    """No host to try; ``reply`` is the DSN status text, 4xx defers and 5xx bounces."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return self.reply.startswith("5")


def order_mx(
    records: list[tuple[int, str]], below: int | None = None, rng: random.Random | None = None
) -> list[str]:
    """Exchanges by preference, equal preferences shuffled (RFC 5321 §5.1); with
    ``below`` (our own preference as a backup MX) only strictly better ones."""
    rng = rng or random.Random()
    usable = [(p, host) for p, host in records if below is None or p < below]
    rng.shuffle(usable)
    return [host for _, host in sorted(usable, key=lambda r: r[0])]


def is_null_mx(records: list[tuple[int, str]]) -> bool:
    """RFC 7505 §3: a single MX with preference 0 and exchange "." accepts no mail."""
    return len(records) == 1 and records[0][1] in ("", ".")


class Router:
    def __init__(self, config: RelayNodeConfig) -> None:
        self.config = config
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [config.dns.host]
        self.resolver.port = config.dns.port
        self.resolver.lifetime = 5.0
        self.answers: dict[str, list[str]] = {}  # the last MX answer per domain, logged

    def destination(self, domain: str) -> str:
        """The key recipients are grouped (and delivery concurrency limited) by."""
        cfg = self.config
        if domain in cfg.local_domains:
            lmtp = cfg.local_domains[domain].lmtp
            return f"lmtp:{lmtp.host}:{lmtp.port}"
        if cfg.next_hop is not None and domain not in cfg.relay_domains:
            return f"smtp:[{cfg.next_hop.host}]:{cfg.next_hop.port}"
        return f"smtp:{domain}"

    async def hops(self, domain: str) -> list[Hop]:
        """Hosts to try in order for ``domain``; raises RouteError when there are none."""
        cfg = self.config
        if domain in cfg.local_domains:
            lmtp = cfg.local_domains[domain].lmtp
            return [Hop(f"{lmtp.host}", lmtp.host, lmtp.port, lmtp=True)]
        if domain in cfg.relay_domains:
            return await self._mx_hops(domain, below=cfg.relay_domains[domain].preference)
        if cfg.next_hop is not None:
            return [Hop(cfg.next_hop.host, cfg.next_hop.host, cfg.next_hop.port)]
        return await self._mx_hops(domain)

    async def _mx_hops(self, domain: str, below: int | None = None) -> list[Hop]:
        try:
            answer = await self.resolver.resolve(domain, "MX", search=False)
            records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
        except dns.resolver.NXDOMAIN:
            raise RouteError(f"550 5.1.2 domain {domain} does not exist") from None
        except dns.resolver.NoAnswer:
            records = [(0, domain)]  # RFC 5321 §5.1: no MX, the domain's own address
        except dns.exception.DNSException as exc:
            raise RouteError(f"451 4.4.3 MX lookup for {domain} failed: {exc}") from None
        self.answers[domain] = [f"{p} {host}" for p, host in sorted(records)]  # for trace
        if is_null_mx(records):
            raise RouteError(f"556 5.1.10 domain {domain} accepts no mail (null MX)")
        hops: list[Hop] = []
        # RFC 5321 §5.1: no MX better than ourselves would make the mail loop
        error = "554 5.4.6 mail for this domain loops back to myself"
        for host in order_mx(records, below):
            try:
                addresses = await self._addresses(host)
            except RouteError as exc:
                error = exc.reply
                continue
            if not addresses and not error.startswith("4"):
                error = f"550 5.4.4 MX host {host} has no address"
            hops += [
                Hop(host, a, self.config.smtp_ports.get(a, self.config.remote_smtp_port))
                for a in addresses
                if a != self.config.address  # never deliver to ourselves
            ]
        if not hops:
            raise RouteError(error)
        return hops[:MAX_ADDRESSES]

    async def _addresses(self, host: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(host, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise RouteError(f"451 4.4.3 address lookup for {host} failed: {exc}") from None
        return [r.address for r in answer]
