"""MTA-STS (RFC 8461) at the sending relay: a domain's policy, found by its
``_mta-sts`` TXT record and fetched over HTTPS verified against the lab CA, narrows
delivery to the MX hosts it names and requires TLS with a valid certificate (enforce),
or only reports what would have failed (testing). Failures are logged as TLS-RPT
result types (RFC 8460 §4.3). The HTTP exchange is h11's (sans-IO)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any

import dns.asyncresolver
import dns.exception

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.mailauth.sts_policy import (
    MAX_POLICY,
    PATH,
    Policy,
    PolicyError,
    parse_policy,
    parse_txt,
)
from mxlab.nodes.relay.routing import Hop
from mxlab.nodes.relay.sessions import SessionCache
from mxlab.nodes.relay.transport import ClientIdentity, Outcome, Transfer, send

FETCH_TIMEOUT = 10.0
TXT_NEGATIVE_TTL = 60.0  # the lab SOA's negative TTL: no record, ask again after this
_UNTRIED = Outcome("451 4.4.0 not tried", "")


class _NamedContext(ssl.SSLContext):
    """Verifies the peer as ``name``: STARTTLS in our client names no server, and
    RFC 8461 §4.2 wants the MX host's own name in its certificate."""

    name = ""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if not kwargs.get("server_hostname"):
            kwargs["server_hostname"] = self.name
        return super().wrap_bio(*args, **kwargs)


def verifying_context(ca: str, name: str = "") -> ssl.SSLContext:
    """A client context trusting the lab CA only, checking ``name`` (or the name the
    connection gives)."""
    context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.name = name
    context.load_verify_locations(ca)
    return context


def result_type(reply: str) -> str:
    """The TLS-RPT result type (RFC 8460 §4.3) a failed hop's reply stands for."""
    if "STARTTLS" in reply:
        return "starttls-not-supported"
    if "certificate not valid" not in reply:
        return ""  # not a TLS failure: the host is down, busy...
    if "mismatch" in reply:
        return "certificate-host-mismatch"
    return "certificate-expired" if "expired" in reply else "certificate-not-trusted"


class MtaSts:
    """The sending side: policies cached per domain by TXT id and max_age (§5.1)."""

    def __init__(self, config: RelayNodeConfig, resolver: dns.asyncresolver.Resolver) -> None:
        self.config = config
        self.resolver = resolver
        self.sessions = SessionCache()  # verified sessions only, apart from opportunistic ones
        self._txt: dict[str, tuple[str | None, float]] = {}  # domain -> (id, until)
        self._policies: dict[str, tuple[str, Policy, float]] = {}  # domain -> (id, .., until)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._fetching: dict[str, asyncio.Lock] = {}  # one lookup per domain at a time

    def _emit(self, event: str, **fields: object) -> None:
        emit(self.config.node, event, **fields)

    async def send(
        self,
        domain: str | None,
        hops: list[Hop],
        rcpts: list[str],
        transfer: Transfer,
        me: ClientIdentity,
        cache: SessionCache,
        on_delivered: Callable[[dict[str, Outcome]], None],
    ) -> dict[str, Outcome]:
        """``transport.send``, under ``domain``'s policy when it is an MX delivery
        (``domain`` None: a smarthost or the store, no policy applies)."""
        policy = await self.policy(domain) if domain and self.config.tls else None
        if domain is None or policy is None or policy.mode == "none":
            return await send(hops, rcpts, transfer, me, cache, on_delivered)
        allowed = [h for h in hops if policy.matches(h.name)]
        for host in sorted({h.name for h in hops if h not in allowed}):
            self._failure(domain, policy, host, "validation-failure", "MX not in the policy")
        if not allowed and policy.mode == "enforce":
            reply = (
                f"451 4.7.5 MTA-STS: no MX host of {domain} matches its policy "
                f"(mx: {', '.join(policy.mx)}; RFC 8461 §4.1)"
            )
            return dict.fromkeys(rcpts, Outcome(reply, domain))
        outcomes = await self._verified(domain, policy, allowed, rcpts, transfer, me, on_delivered)
        rest = [r for r in rcpts if outcomes.get(r, _UNTRIED).kind == "deferred"]
        if policy.mode == "testing" and rest:  # §5: deliver as usual, having reported
            outcomes |= await send(hops, rest, transfer, me, cache, on_delivered)
        return outcomes

    async def _verified(
        self,
        domain: str,
        policy: Policy,
        hops: list[Hop],
        rcpts: list[str],
        transfer: Transfer,
        me: ClientIdentity,
        on_delivered: Callable[[dict[str, Outcome]], None],
    ) -> dict[str, Outcome]:
        """The hops in order over STARTTLS, each certificate valid for its MX name
        (§4.2); TLS failures reported. A 4xx moves on to the next hop, as in send."""
        outcomes: dict[str, Outcome] = {}
        pending = list(rcpts)
        for hop in hops:
            strict = ClientIdentity(me.helo, me.source, self._context(hop.name))
            got = await send([hop], pending, transfer, strict, self.sessions, on_delivered)
            outcomes |= got
            failed = {result_type(o.reply) for o in got.values() if o.kind == "deferred"}
            for kind in sorted(failed - {""}):
                self._failure(domain, policy, hop.name, kind, next(iter(got.values())).reply)
            pending = [r for r in pending if got[r].kind == "deferred"]
            if not pending:
                break
        return outcomes

    def _context(self, host: str) -> ssl.SSLContext:
        context = self._contexts.get(host)
        if context is None:
            assert self.config.tls is not None
            context = self._contexts[host] = verifying_context(self.config.tls.ca, host)
        return context

    def _failure(self, domain: str, policy: Policy, mx: str, kind: str, detail: str) -> None:
        """A TLS-RPT failure detail (RFC 8460 §4.3), as an event."""
        self._emit(
            "tls_failure",
            domain=domain,
            policy_type="sts",
            mode=policy.mode,
            result_type=kind,
            mx=mx,
            detail=detail,
        )

    async def policy(self, domain: str) -> Policy | None:
        """The domain's policy: the cached one while its id is the TXT record's and its
        max_age holds, else fetched anew; a failed fetch keeps a cached one (§5.1)."""
        async with self._fetching.setdefault(domain, asyncio.Lock()):
            return await self._policy(domain)

    async def _policy(self, domain: str) -> Policy | None:
        now = time.time()
        ident = await self._txt_id(domain, now)
        cached = self._policies.get(domain)
        if cached is not None and cached[2] < now:
            del self._policies[domain]
            cached = None
        if ident is None or (cached is not None and cached[0] == ident):
            return cached[1] if cached is not None else None
        try:
            policy = parse_policy(await self._fetch(domain))
        except PolicyError as exc:
            self._fetch_failed(domain, "sts-policy-invalid", str(exc))
        except (OSError, TimeoutError, ValueError, dns.exception.DNSException) as exc:
            self._fetch_failed(domain, "sts-policy-fetch-error", f"{type(exc).__name__}: {exc}")
        else:
            self._policies[domain] = (ident, policy, now + policy.max_age)
            self._emit("mta_sts_policy", domain=domain, id=ident, mode=policy.mode, mx=policy.mx)
            return policy
        return cached[1] if cached is not None else None

    def _fetch_failed(self, domain: str, kind: str, detail: str) -> None:
        self._emit("tls_failure", domain=domain, policy_type="sts", result_type=kind, detail=detail)

    async def _txt_id(self, domain: str, now: float) -> str | None:
        known = self._txt.get(domain)
        if known is not None and known[1] > now:
            return known[0]
        ident, ttl = None, TXT_NEGATIVE_TTL
        with contextlib.suppress(dns.exception.DNSException):
            name = f"_mta-sts.{domain}"
            answer = await self.resolver.resolve(name, "TXT", search=False, lifetime=2.0)
            values = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
            ident, ttl = parse_txt(values), float(answer.rrset.ttl if answer.rrset else 0)
        self._txt[domain] = (ident, now + ttl)
        return ident

    async def _fetch(self, domain: str) -> str:
        """GET https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.3): the
        certificate valid for that name, 200 only (no redirects), text/plain."""
        host = f"mta-sts.{domain}"
        answer = await self.resolver.resolve(host, "A", search=False)
        address = next(iter(answer)).address
        assert self.config.tls is not None
        context = verifying_context(self.config.tls.ca)
        async with asyncio.timeout(FETCH_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                address, self.config.mta_sts.port, ssl=context, server_hostname=host
            )
            try:
                return await _get(reader, writer, host)
            finally:
                writer.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> str:
    import h11

    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_POLICY)
    request = h11.Request(
        method="GET", target=PATH, headers=[("Host", host), ("Connection", "close")]
    )
    writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
    body = b""
    while True:
        try:
            event = conn.next_event()
        except h11.ProtocolError as exc:
            raise ValueError(f"bad HTTP from https://{host}: {exc}") from None
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(16384))
        elif isinstance(event, h11.Response):
            if event.status_code != 200:
                raise ValueError(f"HTTP {event.status_code} for https://{host}{PATH}")
            ctype = dict(event.headers).get(b"content-type", b"")
            if not ctype.lower().startswith(b"text/plain"):
                raise ValueError(f"content type {ctype.decode()!r}, not text/plain")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_POLICY:
                raise ValueError(f"policy larger than {MAX_POLICY} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return body.decode("utf-8")
