"""The user's YAML topology, validated into a ``Topology`` with located, one-line errors."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mxlab.dns.zones import parse_record
from mxlab.lab.errors import TopologyError
from mxlab.lab.yamlfile import read_source, read_yaml
from mxlab.nodes.config import DnsRecord

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^({_LABEL}\.)+{_LABEL}$")
# owner names of extra records: host names, plus "_" labels (_dmarc) and a leading "*"
_OWNER_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_OWNER_RE = re.compile(rf"^(\*\.)?({_OWNER_LABEL}\.)*{_OWNER_LABEL}\.?$")
_NODE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
# RFC 5322 §3.4.1 dot-atom, restricted to the characters every peer in the lab accepts
_LOCALPART_RE = re.compile(r"^[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*$")
_LOCALPART_CHARS = re.compile(r"^[A-Za-z0-9._+-]+$")
# where a node runs: a host name, or a node label as key=value
_PLACEMENT_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*=)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StrictModel(BaseModel):
    """No unknown fields, no silent coercion (``true`` is not port 1), no inf/nan."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


DAY = 86400.0


class QueueSettings(StrictModel):
    retry_initial: float = Field(2.0, gt=0, le=DAY)
    retry_max: float = Field(30.0, gt=0, le=DAY)
    lifetime: float = Field(300.0, gt=0, le=30 * DAY)
    delay_warning: float | None = Field(None, gt=0, le=30 * DAY)
    concurrency_per_destination: int = Field(4, ge=1, le=100)
    delivery_process: bool = False  # true: each relay delivers from a second process


_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
Service = Literal[
    "dns", "smtp", "submission", "lmtp", "imap", "pop3", "submissions", "imaps", "pop3s", "https"
]


class Settings(StrictModel):
    queue: QueueSettings = QueueSettings()
    ports: dict[Service, Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=dict)
    local_subnet: str | None = None  # 127.x.y.0/24 for the local runtime
    docker_subnet: str | None = None  # pinned subnet for the docker runtime
    max_message_size: int = Field(10 * 1024 * 1024, gt=1024, le=1 << 30)
    allow_plaintext_auth: bool = False  # true: passwords before TLS, for a lesson

    @field_validator("local_subnet", "docker_subnet")
    @classmethod
    def _subnet(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        net = ipaddress.ip_network(v, strict=True)
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError("lab addresses are IPv4: use e.g. 10.231.7.0/24")
        if net.prefixlen > 28:
            raise ValueError("subnet too small: use a /24 or larger")
        if info.field_name == "local_subnet" and not net.subnet_of(_LOOPBACK):
            raise ValueError("local nodes bind loopback addresses: use a subnet of 127.0.0.0/8")
        return str(net)


# kind: which software runs the node; role: what it does in the lab. Our own nodes are
# the kinds dns, relay and store; the others run real software configured from the same
# plan (mxlab.lab.kinds, one module per kind).
Kind = Literal["dns", "relay", "store", "postfix", "dovecot", "unbound", "nsd", "external", "sink"]
Role = Literal["dns", "relay", "store", "resolver", "external", "sink"]
KIND_ROLES: dict[str, Role] = {
    "dns": "dns",
    "relay": "relay",
    "store": "store",
    "postfix": "relay",
    "dovecot": "store",
    "nsd": "dns",
    "unbound": "resolver",
    "external": "external",
    "sink": "sink",
}


def role_of(kind: str) -> Role:
    """What a node of this kind does in the lab (a postfix node is a relay)."""
    return KIND_ROLES[kind]


class NodeSpec(StrictModel):
    kind: Kind
    hostname: str | None = None  # FQDN; default <node>.<first domain that names it>
    next_hop: str | None = None  # relays only: smarthost node
    footer: str | None = None  # relays only: appended to every body passing (breaks DKIM)
    # swarm: a node hostname or label=value; hosts: an inventory host or group
    placement: str | None = None
    # external only: where the server mxlab does not run is, "host" for the machine
    # running the lab (its loopback locally, the network's gateway under docker)
    address: str | None = None
    ports: dict[Service, Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=dict)
    resolver: str | None = None  # relays only: an unbound node to ask instead of the lab DNS


class MxSpec(StrictModel):
    node: str
    preference: int = Field(10, ge=0, le=65535)


class MtaStsSpec(StrictModel):
    """An MTA-STS policy (RFC 8461) and TLS-RPT record (RFC 8460) for a domain."""

    mode: Literal["enforce", "testing", "none"] = "enforce"
    node: str  # the relay serving https://mta-sts.<domain>/.well-known/mta-sts.txt
    max_age: int = Field(86400, ge=0, le=31557600)  # RFC 8461 §3.2
    mx: list[str] | None = None  # the policy's mx lines; default the domain's MX hosts
    report_to: str | None = None  # TLS-RPT rua mailbox; default the domain's first user


class AuthSpec(StrictModel):
    """A domain's mail authentication, on by default; each switch turns a part off or
    breaks it on purpose for a lesson."""

    spf: bool = True  # publish v=spf1 with its relays' addresses, -all (RFC 7208)
    dkim: list[Literal["ed25519", "rsa"]] = ["ed25519", "rsa"]  # signing keys; [] signs not
    dmarc: Literal["none", "quarantine", "reject", "off"] = "none"  # _dmarc p= (RFC 7489)
    verify: bool = True  # its MX relays check incoming mail and honour DMARC policies
    arc: bool = True  # its relays ARC-seal the mail they forward (RFC 8617)
    srs: bool = False  # forwarded mail gets an SRS envelope sender of this domain
    wrong_selector: bool = False  # sign with a selector that has no key in DNS
    missing_key: bool = False  # sign, but publish no key
    sign_as: str | None = None  # sign as this other lab domain: d= unaligned with From
    mta_sts: MtaStsSpec | None = None  # publish and serve an MTA-STS policy (RFC 8461)


class DomainSpec(StrictModel):
    store: str | None = None  # required unless every MX is outside the lab or a sink
    mx: list[MxSpec] = Field(min_length=1)
    submission: str | None = None  # relay that takes its users' mail; default: best MX
    users: dict[str, str] = Field(default_factory=dict)  # local part -> password
    forwards: dict[str, list[str]] = Field(default_factory=dict)  # local part -> addresses
    auth: AuthSpec = AuthSpec()
    # local part -> other addresses the user may send as (Postfix's smtpd_sender_login_maps)
    send_as: dict[str, list[str]] = Field(default_factory=dict)


class RecordSpec(StrictModel):
    name: str
    type: Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "PTR", "SRV", "CAA"]
    value: str
    ttl: int = Field(300, ge=0, le=2**31 - 1)  # RFC 2181 §8


class Topology(StrictModel):
    name: str
    nodes: dict[str, NodeSpec] = Field(min_length=1)
    domains: dict[str, DomainSpec] = Field(min_length=1)
    records: list[RecordSpec] = Field(default_factory=list)
    settings: Settings = Settings()
    checks: list[Any] = Field(default_factory=list)  # steps as in a scenario, checks only

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NODE_RE.match(v):
            raise ValueError("lab name must be lowercase letters, digits and '-' (max 32)")
        return v


def field_path(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _check_refs(topo: Topology, src: str) -> None:
    """Cross-references and rules pydantic can't see field by field."""
    from mxlab.lab.kinds import MODULES  # the kinds build on this module

    for name, node in topo.nodes.items():
        if not _NODE_RE.match(name):
            raise TopologyError(src, f"nodes.{name}", "bad node name", "use a-z, 0-9 and '-'")
        if node.kind not in MODULES:
            raise TopologyError(
                src,
                f"nodes.{name}.kind",
                f"kind {node.kind!r} is not available in this mxlab yet",
                f"use one of: {', '.join(MODULES)}",
            )
        if node.next_hop is not None:
            if role_of(node.kind) != "relay":
                raise TopologyError(
                    src, f"nodes.{name}.next_hop", "only relays have a next hop", "remove it"
                )
            hop = topo.nodes.get(node.next_hop)
            if hop is None or role_of(hop.kind) not in SMTP_PEERS:
                raise TopologyError(
                    src,
                    f"nodes.{name}.next_hop",
                    f"no relay named {node.next_hop!r}",
                    f"use one of: {', '.join(_in_role(topo, *SMTP_PEERS))}",
                )
            if node.next_hop == name:
                raise TopologyError(
                    src, f"nodes.{name}.next_hop", "a relay cannot be its own next hop"
                )
        if node.placement is not None and not _PLACEMENT_RE.match(node.placement):
            raise TopologyError(
                src,
                f"nodes.{name}.placement",
                f"{node.placement!r} is neither a host name nor label=value",
                "name a host (swarm node or inventory host) or a label as key=value, e.g. zone=a",
            )
        if node.hostname is not None and not _DOMAIN_RE.match(node.hostname):
            raise TopologyError(
                src, f"nodes.{name}.hostname", f"{node.hostname!r} is not a host name"
            )
        _check_outside(topo, name, node, src)
    _check_hop_loops(topo, src)
    dns_nodes = _in_role(topo, "dns")
    if len(dns_nodes) != 1:
        raise TopologyError(
            src, "nodes", f"need exactly one node of kind dns or nsd, found {len(dns_nodes)}"
        )
    for dom, spec in topo.domains.items():
        where = f"domains.{dom}"
        _check_domain_name(dom, src, where)
        for i, mx in enumerate(spec.mx):
            _check_node_ref(topo, src, f"{where}.mx[{i}].node", mx.node, *SMTP_PEERS)
        _check_store(topo, dom, spec, src)
        if spec.submission is not None:
            _check_node_ref(topo, src, f"{where}.submission", spec.submission, "relay")
        seen: set[str] = set()
        for user, password in spec.users.items():
            _check_user(user, dom, password, src, f"{where}.users.{user}")
            if user.lower() in seen:
                raise TopologyError(
                    src, f"{where}.users.{user}", "duplicate user", "user names are case-blind"
                )
            seen.add(user.lower())
        for user, addresses in spec.send_as.items():
            _check_send_as(user, addresses, seen, src, f"{where}.send_as.{user}")
    for i, rec in enumerate(topo.records):
        if not _OWNER_RE.match(rec.name) or len(rec.name.rstrip(".")) > 253:
            raise TopologyError(
                src,
                f"records[{i}].name",
                f"{rec.name!r} is not a DNS name",
                "labels of letters, digits, '-' and '_', joined by dots; '*.' may lead",
            )
        if not in_lab(topo, rec.name):
            raise TopologyError(
                src,
                f"records[{i}].name",
                f"{rec.name!r} is outside the lab's domains",
                f"use a name under {', '.join(topo.domains)}",
            )
        try:
            parse_record(DnsRecord(name=rec.name, type=rec.type, ttl=rec.ttl, rdata=rec.value), ".")
        except ValueError as exc:
            raise TopologyError(
                src, f"records[{i}].value", str(exc).split(": ", 1)[1], "write it as in a zone file"
            ) from None
    for name, node in topo.nodes.items():
        if node.hostname and not in_lab(topo, node.hostname):
            raise TopologyError(
                src,
                f"nodes.{name}.hostname",
                f"{node.hostname!r} is outside the lab's domains (its A and PTR could not agree)",
                f"use a name under {', '.join(topo.domains)}",
            )


def is_address(text: str) -> bool:
    """``local@domain``: a dot-atom local part (RFC 5322 §3.4.1) at a host name, within
    RFC 5321's lengths (§4.5.3.1)."""
    local, at, domain = text.rpartition("@")
    return bool(
        at
        and _LOCALPART_RE.match(local)
        and _DOMAIN_RE.match(domain.lower())
        and len(local) <= 64
        and len(text) <= 254
    )


def _check_domain_name(dom: str, src: str, where: str) -> None:
    if not dom.isascii():
        raise TopologyError(
            src, where, "not an ASCII domain name", "write an IDN in its xn-- form (RFC 5890)"
        )
    if dom != dom.lower():
        raise TopologyError(src, where, "domain names are lowercase here", f"use {dom.lower()}")
    if not _DOMAIN_RE.match(dom):
        fix = "labels of a-z, 0-9 and '-', 1-63 long, no dot at either end: e.g. alpha.test"
        raise TopologyError(src, where, "not a domain name", fix)
    if len(dom) > 253:  # RFC 1035 §2.3.4: 255 octets on the wire
        raise TopologyError(src, where, "domain name longer than 253 characters")
    if not dom.endswith(".test"):
        raise TopologyError(
            src, where, "lab domains must end in .test", "RFC 6761 reserves .test for labs"
        )


# RFC 5321 §4.5.3.1.4: a command line is 512 octets with its CRLF; AUTH PLAIN sends
# base64("\0user\0password") on it (RFC 4954 §4, RFC 4616 §2).
_AUTH_PLAIN_LINE = 512 - len("AUTH PLAIN \r\n")
# RFC 2449 §4: a POP3 command line is at most 255 octets with its CRLF.
_POP3_PASS_LINE = 255 - len("PASS \r\n")


def max_password_bytes(address: str) -> int:
    """The longest password whose login still fits an SMTP AUTH PLAIN and a POP3 PASS line."""
    plain = _AUTH_PLAIN_LINE // 4 * 3 - 2 - len(address.encode())
    return min(plain, _POP3_PASS_LINE)


def _check_user(user: str, dom: str, password: str, src: str, where: str) -> None:
    """A local part every peer accepts and a password that fits a login line."""
    if not _LOCALPART_CHARS.match(user):
        raise TopologyError(src, where, "bad user name", "use letters, digits, . _ + -")
    if not _LOCALPART_RE.match(user):
        raise TopologyError(
            src,
            where,
            "a user name cannot start or end with '.' or hold '..'",
            "RFC 5322 §3.4.1 dot-atom: e.g. alice.smith",
        )
    address = f"{user}@{dom}"
    if len(user) > 64 or len(address) > 254:  # RFC 5321 §4.5.3.1.1, §4.5.3.1.3
        raise TopologyError(
            src, where, "address too long", "64 characters before the @, 254 in all (RFC 5321)"
        )
    if not password:
        raise TopologyError(src, where, "empty password", "give the user a password")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise TopologyError(
            src, where, "the password holds a control character (CR, LF, NUL, tab...)",
            "a login line cannot carry it: use printable characters",
        )  # fmt: skip
    limit = max_password_bytes(address)
    if len(password.encode()) > limit:
        raise TopologyError(
            src,
            where,
            f"the password is {len(password.encode())} bytes: its login line would not fit",
            f"at most {limit} bytes for {address} (SMTP AUTH PLAIN in 512 octets, "
            "RFC 5321 §4.5.3.1.4; POP3 PASS in 255, RFC 2449 §4)",
        )


def _check_capacity(topo: Topology, src: str) -> None:
    """Every node needs an address of the lab's subnet: .0, the gateway .1 and the
    broadcast address are taken. Both runtimes carve a /24 unless a subnet is pinned."""
    pinned = (topo.settings.local_subnet, topo.settings.docker_subnet)
    room = min(ipaddress.ip_network(s or "0.0.0.0/24").num_addresses for s in pinned) - 3
    if len(topo.nodes) > room:
        raise TopologyError(
            src,
            "nodes",
            f"{len(topo.nodes)} nodes, but the lab's subnet has addresses for {room}",
            f"use at most {room} nodes, or pin settings.local_subnet and "
            "settings.docker_subnet to a larger subnet (a /23 holds 509)",
        )


def _check_hostnames(topo: Topology, src: str) -> None:
    """Two nodes with one name would share an A record and fight over its PTR."""
    from mxlab.lab.plan import _hostnames  # the planner builds on this module

    owner: dict[str, str] = {}
    for name, fqdn in _hostnames(topo).items():
        if fqdn in owner:
            raise TopologyError(
                src,
                f"nodes.{name}.hostname",
                f"{fqdn} is already the host name of node {owner[fqdn]}",
                "give each node its own hostname",
            )
        owner[fqdn] = name


def _check_ports(topo: Topology, src: str) -> None:
    """A pinned port must not land on another service's port, under either default set."""
    from mxlab.lab.plan import STANDARD_PORTS, UNPRIVILEGED_PORTS

    for defaults in (STANDARD_PORTS, UNPRIVILEGED_PORTS):
        ports = defaults | topo.settings.ports
        taken: dict[int, str] = {}
        for service in sorted(ports, key=lambda s: s not in topo.settings.ports):
            port = ports[service]
            if port in taken:
                pinned = service if service in topo.settings.ports else taken[port]
                other = taken[port] if pinned == service else service
                raise TopologyError(
                    src,
                    f"settings.ports.{pinned}",
                    f"{pinned} and {other} would both listen on port {port}",
                    "give each service its own port",
                )
            taken[port] = service


def _check_queue(topo: Topology, src: str) -> None:
    """Retry timers that can never fire before the message expires are a typo."""
    q = topo.settings.queue
    if q.retry_initial > q.retry_max:
        raise TopologyError(
            src,
            "settings.queue.retry_initial",
            f"{q.retry_initial:g} s is more than retry_max ({q.retry_max:g} s)",
            "retries start short and back off up to retry_max",
        )
    if q.retry_initial >= q.lifetime:
        raise TopologyError(
            src,
            "settings.queue.retry_initial",
            f"{q.retry_initial:g} s is not before the lifetime ({q.lifetime:g} s)",
            "a message must be retried at least once before it bounces",
        )
    if q.delay_warning is not None and q.delay_warning >= q.lifetime:
        raise TopologyError(
            src,
            "settings.queue.delay_warning",
            f"{q.delay_warning:g} s is not before the lifetime ({q.lifetime:g} s)",
            "warn of a delay before the message bounces, or remove it",
        )


def in_lab(topo: Topology, name: str) -> bool:
    """Whether ``name`` is one of the lab's domains or under one."""
    name = name.rstrip(".").lower()
    return any(name == d or name.endswith("." + d) for d in topo.domains)


def _check_hop_loops(topo: Topology, src: str) -> None:
    for start in topo.nodes:
        seen = [start]
        hop = topo.nodes[start].next_hop
        while hop is not None:
            if hop in seen:
                chain = " -> ".join([*seen, hop])
                raise TopologyError(
                    src, f"nodes.{start}.next_hop", f"next hops form a loop: {chain}"
                )
            seen.append(hop)
            hop = topo.nodes[hop].next_hop


def _check_send_as(user: str, addresses: list[str], users: set[str], src: str, where: str) -> None:
    if user.lower() not in users:
        raise TopologyError(src, where, f"no user {user!r} in this domain", "add it under users")
    for i, address in enumerate(addresses):
        local, _, domain = address.rpartition("@")
        if not local or not _DOMAIN_RE.match(domain):
            raise TopologyError(
                src, f"{where}[{i}]", f"{address!r} is not a mail address", "write local@domain"
            )


def _in_role(topo: Topology, *roles: str) -> list[str]:
    """The nodes in one of ``roles`` (a relay of any kind: ours or postfix)."""
    return [n for n, spec in topo.nodes.items() if role_of(spec.kind) in roles]


def _check_node_ref(topo: Topology, src: str, field: str, ref: str, *kinds: str) -> None:
    node = topo.nodes.get(ref)
    if node is None or role_of(node.kind) not in kinds:
        need = " or ".join(kinds)
        known = ", ".join(_in_role(topo, *kinds)) or f"(none: add a node of kind {kinds[0]})"
        what = f"no node named {ref!r}" if node is None else f"{ref!r} is a {node.kind}"
        raise TopologyError(src, field, f"{what}, need a {need}", f"use one of: {known}")


# roles that take mail by SMTP from a relay: as its next hop or as a domain's MX
SMTP_PEERS = ("relay", "sink", "external")


def _check_outside(topo: Topology, name: str, node: NodeSpec, src: str) -> None:
    """An external node says where its server is; only it does (mxlab places the others)."""
    where = f"nodes.{name}"
    if node.kind != "external":
        if node.address is not None:
            raise TopologyError(
                src, f"{where}.address", "only external nodes have an address here",
                "remove it: mxlab gives the nodes it runs their addresses",
            )  # fmt: skip
        if node.ports:
            raise TopologyError(
                src, f"{where}.ports", "only external nodes have ports here",
                "remove it: the lab's ports are settings.ports",
            )  # fmt: skip
    elif node.address is None:
        raise TopologyError(
            src, f"{where}.address", "an external node needs the address of its server",
            "add address: 192.0.2.10, or address: host for this machine",
        )  # fmt: skip
    elif node.address != "host":
        try:
            ipaddress.IPv4Address(node.address)
        except ValueError:
            raise TopologyError(
                src, f"{where}.address", f"{node.address!r} is not an IPv4 address",
                "write e.g. 192.0.2.10, or host for the machine running the lab",
            ) from None  # fmt: skip
    if node.resolver is not None:
        if role_of(node.kind) != "relay":
            raise TopologyError(
                src, f"{where}.resolver", "only relays have a resolver", "remove it"
            )
        _check_node_ref(topo, src, f"{where}.resolver", node.resolver, "resolver")


def _check_store(topo: Topology, dom: str, spec: DomainSpec, src: str) -> None:
    """A domain's mail ends in its store, unless every MX is a sink or outside the lab."""
    where = f"domains.{dom}"
    inside = [m.node for m in spec.mx if role_of(topo.nodes[m.node].kind) == "relay"]
    if spec.store is not None:
        _check_node_ref(topo, src, f"{where}.store", spec.store, "store")
    elif inside:
        raise TopologyError(
            src, f"{where}.store", "required field is missing",
            f"add it: {inside[0]} delivers the domain's mail to a store",
        )  # fmt: skip
    if spec.store is not None and not spec.users:
        raise TopologyError(
            src, f"{where}.users", "a domain with a store needs at least 1 user", "add one"
        )
    if spec.store is None and spec.users:
        raise TopologyError(
            src, f"{where}.users", "the domain's mail leaves the lab: no mailboxes to log in to",
            "remove users, or give the domain a store and a relay as MX",
        )  # fmt: skip


def validation_error(
    exc: ValidationError, source: str, skip: Collection[Any] = frozenset()
) -> TopologyError:
    """The first pydantic error as one located line; ``skip`` drops union tags from the path."""
    errors = exc.errors()
    # a misspelt field is both unknown and missing: the unknown one gets a did-you-mean,
    # from the fields missing beside it first
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    missing = [
        str(e["loc"][-1])
        for e in errors
        if e["type"] == "missing" and e["loc"][:-1] == err["loc"][:-1]
    ]
    loc = [p for p in err["loc"] if p not in skip]
    if loc and loc[-1] == "[key]":  # a mapping key of the wrong type or value
        loc.pop()
    field = field_path(tuple(loc)) or "(top level)"
    return TopologyError(source, field, _explain(err), _fix(err, missing))


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse and validate topology YAML; every mistake is a ``TopologyError``."""
    data = read_yaml(text, source)
    if "steps" in data and "nodes" not in data:
        raise TopologyError(
            source, "steps", "a scenario file, not a topology", "run it with mxlab scenario run"
        )
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    _check_refs(topo, source)
    _check_capacity(topo, source)
    _check_hostnames(topo, source)
    _check_ports(topo, source)
    _check_queue(topo, source)
    from mxlab.lab.mailauth import check_auth  # mail authentication builds on this module

    check_auth(topo, source)
    from mxlab.lab.plan import check_zones  # the planner builds on this module

    check_zones(topo, source)
    from mxlab.lab.scenario import topology_checks  # scenarios build on this module

    topology_checks(topo, source)
    return topo


def _explain(err: Mapping[str, Any]) -> str:
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{err['input']!r} is not one of {', '.join(_choices(err))}"
    if kind == "union_tag_invalid":
        return f"{err['ctx']['tag']!r} is not a step"
    if kind == "union_tag_not_found":
        return "not a step"
    if kind in ("model_type", "dict_type"):
        return f"{err['input']!r} where a mapping of fields belongs"
    return msg[0].lower() + msg[1:] if msg else msg


def _fix(err: Mapping[str, Any], missing: list[str]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        word = str(err["loc"][-1])
        suggest = did_you_mean(word, missing) or did_you_mean(word, _field_names(), 0.8)
        return suggest or "remove it or check its spelling"
    if kind == "missing":
        return "add it"
    if kind == "literal_error":
        return did_you_mean(str(err["input"]), _choices(err)) or "use one of them"
    if kind == "union_tag_invalid":
        choices = _choices(err)
        return did_you_mean(err["ctx"]["tag"], choices) or f"use one of: {', '.join(choices)}"
    if kind.startswith(("less_than", "greater_than")):
        return "use a value in range"
    if kind == "union_tag_not_found":
        return "write '- ACTION: {field: value, ...}', or '- stop: NODE' for node faults"
    if kind == "model_type":
        fields = ", ".join(f"{f}: ..." for f in _required(err["ctx"]["class_name"]))
        return f"write it as {{{fields}}}" if fields else "write it as field: value lines"
    if kind == "string_type":
        return "write it as a string, in quotes if YAML reads it as a number or boolean"
    if kind in ("int_type", "float_type", "bool_type"):
        return "write a plain number or boolean, without quotes"
    return ""


def _required(class_name: str) -> list[str]:
    """The required fields of the model named ``class_name``, as a user writes them."""
    for model in _models():
        if model.__name__ == class_name:
            fields = model.model_fields.items()
            return [info.alias or name for name, info in fields if info.is_required()]
    return []


def _choices(err: Mapping[str, Any]) -> list[str]:
    ctx = err.get("ctx", {})
    return re.findall(r"'([^']*)'", ctx.get("expected", ctx.get("expected_tags", "")))


def did_you_mean(word: str, known: list[str], cutoff: float = 0.6) -> str:
    """A fix suggesting the closest known word, or "" when none is close."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}?" if close else ""


def _field_names() -> list[str]:
    """Every field name of every topology and scenario model, for did-you-mean (closer
    matches only: this list is not the fields of the one model the key is in)."""
    return sorted({info.alias or n for m in _models() for n, info in m.model_fields.items()})


def _models() -> list[type[BaseModel]]:
    """Every topology and scenario model."""
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [StrictModel]
    while todo:
        model = todo.pop()
        found.append(model)
        todo.extend(model.__subclasses__())
    return found


def load_topology(path: str | Path) -> Topology:
    """Read a topology file; a missing file is a ``TopologyError`` too."""
    p = Path(path)
    return parse_topology(read_source(p), str(p))
