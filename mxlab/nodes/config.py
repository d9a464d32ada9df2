"""Node configs: the only contract between the planner and the node programs.

The planner (``mxlab.lab.plan``) writes one of these per node as JSON; a node program
(``python -m mxlab.nodes ROLE --config node.json``) reads it and never sees the
topology. Every field is concrete: addresses, ports and paths as the node will use them
inside its runtime (a container or a local process).

The classes are frozen stdlib dataclasses, so a node starts without pydantic (about
100 ms and 9 MiB a process): ``load_config`` builds them with a small loader that checks
each value against its declared type. The planner validates and serialises them with
pydantic all the same (it validates stdlib dataclasses; ``__pydantic_config__`` forbids
unknown keys and re-validates instances). Declare fields as ``name: type = default``, a
mutable default as ``field(default_factory=dict)``.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Literal,
    Self,
    TypeVar,
    Union,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)

T = TypeVar("T")
Field = field  # pydantic's spelling, accepted too in declarations: Field(default_factory=dict)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field, Field))
class _Model:
    __pydantic_config__ = {"extra": "forbid", "revalidate_instances": "always"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True, kw_only=True)(cls)

    # pydantic's spelling, so the planner's code reads the same as for its own models
    def model_copy(self, *, update: dict[str, Any]) -> Self:
        return dataclasses.replace(self, **update)  # type: ignore[type-var]

    def model_dump_json(self, *, indent: int | None = None) -> str:
        return dump_json(self, indent)


class Endpoint(_Model):
    host: str
    port: int


class TlsFiles(_Model):
    """PEM paths of the node's certificate (signed by the lab CA) and key."""

    cert: str
    key: str
    ca: str


class DnsRecord(_Model):
    """One resource record in zone-file presentation form, owner name absolute."""

    name: str  # e.g. "mx.alpha.test."
    type: str  # "A", "MX", "SOA", ...
    ttl: int = 300
    rdata: str  # e.g. "10 mx.alpha.test." — the RDATA as a BIND zone file writes it


class Zone(_Model):
    origin: str  # e.g. "alpha.test."
    records: list[DnsRecord]


class LoginLimits(_Model):
    """Failed logins, as Dovecot limits them: each failure is answered only after a
    delay (auth_failure_delay, 2 s) that doubles with the failures of the source
    address, across its connections (Dovecot's auth penalty, up to 15 s, forgotten
    after an hour); a connection is dropped after ``max_failures``."""

    failure_delay: float = 2.0
    max_delay: float = 15.0
    max_failures: int = 3  # per connection
    penalty_ttl: float = 3600.0


class NodeBase(_Model):
    lab: str
    node: str
    fqdn: str  # e.g. "mx.alpha.test"
    address: str  # the address this node binds to and is known by in DNS
    state_dir: str  # where the node keeps its queue / mail / fault files

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


class DnsNodeConfig(NodeBase):
    role: Literal["dns"] = "dns"
    port: int  # UDP and TCP
    zones: list[Zone]


class QueuePolicy(_Model):
    """Retry schedule, scaled down from Postfix's (300 s doubling to 4000 s, 5 days)."""

    retry_initial: float = 2.0  # seconds before the first retry
    retry_max: float = 30.0  # backoff doubles up to this
    lifetime: float = 300.0  # then the message bounces (RFC 3464)
    delay_warning: float | None = None  # send a delay DSN after this many seconds
    concurrency_per_destination: int = 4
    # deliver from a second process, as Postfix's qmgr and smtp run beside its smtpd:
    # the relay then uses two cores, for the memory of a second interpreter
    delivery_process: bool = False


class LocalDomain(_Model):
    """A domain this relay is final for: recipients are handed to the store by LMTP."""

    lmtp: Endpoint
    users: list[str]  # local parts that exist; anything else is 550 at RCPT


class RelayDomain(_Model):
    """A domain this relay is a backup MX for: accept, then forward to a better MX."""

    users: list[str]
    preference: int  # our own MX preference: only MX hosts with a lower value are tried


class DkimKey(_Model):
    """A DKIM signing key (RFC 6376 §3.1 selector, RFC 8463 Ed25519): the private key
    file as the node reads it, in dkimpy's form (RSA PEM, Ed25519 base64 seed)."""

    domain: str  # d=
    selector: str  # s=
    algorithm: Literal["rsa-sha256", "ed25519-sha256"]
    key: str  # path


class MailAuth(_Model):
    """Mail authentication at a relay (SPF, DKIM, DMARC, ARC): what it signs, what it
    checks, and the on-purpose breakage a lesson asks for."""

    # the planner turns the checks on; a config written by hand does without them
    # SPF, DKIM, ARC, DMARC on mail from other hosts, an A-R header added, and DMARC
    # policies honoured: p=reject refused at DATA, p=quarantine marked for Junk
    verify: bool = False
    sign: dict[str, list[DkimKey]] = field(default_factory=dict)  # sender domain -> keys
    arc: DkimKey | None = None  # seals mail it forwards (RFC 8617 §5.1)
    forwards: dict[str, list[str]] = field(default_factory=dict)  # address -> next addresses
    srs_secret: str | None = None  # path; None forwards keeping the sender (breaks SPF)
    srs_domain: str = ""  # the domain its SRS addresses are under
    footer: str | None = None  # appended to every body passing through (breaks DKIM)
    internal: list[str] = Field(default_factory=list)  # relays of ours: checked before us


class MtaSts(_Model):
    """MTA-STS (RFC 8461) at a relay: the policies it serves over HTTPS, by domain, and
    the lab-wide port policy hosts listen on (443; 2443 for an unprivileged lab)."""

    port: int = 443
    policies: dict[str, str] = field(default_factory=dict)  # domain -> policy text


class RelayNodeConfig(NodeBase):
    role: Literal["relay"] = "relay"
    smtp_port: int  # MX traffic (25 in a container or as root)
    submission_port: int  # AUTH submission (587)
    submissions_port: int | None = None  # the same over implicit TLS (465, RFC 8314 §3.3)
    remote_smtp_port: int  # the port other MX hosts listen on (lab-wide)
    dns: Endpoint  # the lab DNS server asked for MX and A records
    local_domains: dict[str, LocalDomain] = field(default_factory=dict)
    relay_domains: dict[str, RelayDomain] = field(default_factory=dict)
    auth_users: dict[str, str] = field(default_factory=dict)  # address -> password hash
    # login -> the other addresses it may send as (Postfix's smtpd_sender_login_maps)
    sender_aliases: dict[str, list[str]] = field(default_factory=dict)
    trusted_clients: list[str] = field(default_factory=list)  # may relay anywhere (chains)
    next_hop: Endpoint | None = None  # smarthost for every non-local domain
    # MX address -> its SMTP port where not remote_smtp_port (peers outside the lab)
    smtp_ports: dict[str, int] = field(default_factory=dict)
    max_message_size: int = 10 * 1024 * 1024
    max_received_headers: int = 30  # loop detection
    allow_plaintext_auth: bool = False  # AUTH before STARTTLS (Postfix's smtpd_tls_auth_only)
    login_limits: LoginLimits = LoginLimits()
    queue: QueuePolicy = QueuePolicy()
    tls: TlsFiles | None = None
    mailauth: MailAuth = MailAuth()
    mta_sts: MtaSts = MtaSts()


class StoreUser(_Model):
    password_hash: str


class StoreNodeConfig(NodeBase):
    role: Literal["store"] = "store"
    lmtp_port: int
    imap_port: int
    pop3_port: int
    imaps_port: int | None = None
    pop3s_port: int | None = None
    domains: list[str]
    users: dict[str, StoreUser]  # full address -> user
    allow_plaintext_auth: bool = False  # passwords before TLS (Dovecot's disable_plaintext_auth)
    login_limits: LoginLimits = LoginLimits()
    tls: TlsFiles | None = None


class SinkNodeConfig(NodeBase):
    """An SMTP sink (like Postfix's smtp-sink or Mailpit): accepts any recipient and
    keeps every message, envelope and bytes, in state_dir for checks to read."""

    role: Literal["sink"] = "sink"
    smtp_port: int
    max_message_size: int = 10 * 1024 * 1024
    tls: TlsFiles | None = None  # STARTTLS offered (RFC 3207), as a real MX would


class ResolverNodeConfig(NodeBase):
    """A recursive resolver for the lab: the lab's zones are stub zones at its DNS."""

    role: Literal["resolver"] = "resolver"
    port: int  # UDP and TCP
    dns: Endpoint  # the lab's authoritative server
    stub_zones: list[str]  # origins, e.g. "alpha.test."
    allow: list[str]  # networks whose clients may ask it


class ExternalNodeConfig(NodeBase):
    """A server mxlab does not run: recorded so the lab directory says where it is."""

    role: Literal["external"] = "external"
    ports: dict[str, int]  # service -> port


NodeConfig = (
    DnsNodeConfig
    | RelayNodeConfig
    | StoreNodeConfig
    | SinkNodeConfig
    | ResolverNodeConfig
    | ExternalNodeConfig
)
ROLES: dict[str, type[NodeConfig]] = {
    "dns": DnsNodeConfig,
    "relay": RelayNodeConfig,
    "store": StoreNodeConfig,
    "sink": SinkNodeConfig,
    "resolver": ResolverNodeConfig,
    "external": ExternalNodeConfig,
}


class ConfigError(ValueError):
    """A node config that does not match its declaration: names the field at fault."""


def load_config(path: str | Path) -> NodeConfig:
    """Read a node config written by the planner, checking every value's type."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    role = data.get("role") if isinstance(data, dict) else None
    if role not in ROLES:
        raise ConfigError(f"{path}: role: one of {sorted(ROLES)} expected, got {role!r}")
    try:
        built: NodeConfig = build(ROLES[role], data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return built


def parse_json(tp: type[T], data: bytes | str) -> T:
    """JSON text as an instance of ``tp``; ValueError (ConfigError) when it is not one."""
    built: T = build(tp, json.loads(data))
    return built


def dump_json(obj: Any, indent: int | None = None) -> str:
    """A dataclass instance as JSON, fields in declaration order, as pydantic's
    ``model_dump_json`` writes it (compact unless indented, non-ASCII kept), so files
    pydantic wrote and files written here read the same."""
    if indent is None:  # the queue writes one per message: its encoder is kept
        return _COMPACT.encode(obj)
    return json.dumps(
        obj, indent=indent, separators=(",", ": "), ensure_ascii=False, default=_fields
    )


def _fields(obj: Any) -> dict[str, Any]:
    names = _NAMES.get(type(obj))
    if names is None:
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
        names = _NAMES.setdefault(type(obj), tuple(f.name for f in dataclasses.fields(obj)))
    return {name: getattr(obj, name) for name in names}


_NAMES: dict[type, tuple[str, ...]] = {}  # dataclass -> its fields' names, in order
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_fields)


# dataclass -> (field types, fields without a default)
_SHAPES: dict[type, tuple[dict[str, Any], frozenset[str]]] = {}
_SCALARS = (str, int, bool)


def build(tp: Any, value: Any, where: str = "") -> Any:
    """``value`` (parsed JSON) as an instance of the declared type ``tp``, checked as
    pydantic would (exact JSON types, an int where a float is declared, unknown or
    missing fields refused); what every node reads goes through it: its config, the
    relay's queue files. Raises ConfigError naming the field at fault."""
    if type(value) is tp and tp in _SCALARS:  # most values: checked first
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where or tp.__name__}: an object expected, got {value!r}")
        hints, required = _SHAPES.get(tp) or _shape(tp)
        unknown = value.keys() - hints.keys()
        if unknown:
            raise ConfigError(f"{where}{sorted(unknown)[0]}: unknown field (remove it)")
        missing = required - value.keys()
        if missing:
            raise ConfigError(f"{where}{sorted(missing)[0]}: missing (required)")
        return tp(**{k: build(hints[k], v, f"{where}{k}.") for k, v in value.items()})
    origin = get_origin(tp)
    where = where.rstrip(".") or "value"
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: a list expected, got {value!r}")
        (item,) = get_args(tp)
        return [build(item, v, f"{where}[{i}].") for i, v in enumerate(value)]
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        problems = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return build(arg, value, where + ".")
            except ConfigError as exc:
                problems.append(str(exc))
        raise ConfigError("; ".join(problems))
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: one of {list(get_args(tp))} expected, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: an object expected, got {value!r}")
        _, item = get_args(tp)
        return {k: build(item, v, f"{where}[{k!r}].") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is Any:
        return value
    raise ConfigError(f"{where}: {getattr(tp, '__name__', tp)} expected, got {value!r}")


def _shape(tp: type) -> tuple[dict[str, Any], frozenset[str]]:
    no_default = dataclasses.MISSING
    required = [
        f.name
        for f in dataclasses.fields(tp)
        if f.default is no_default and f.default_factory is no_default
    ]
    return _SHAPES.setdefault(tp, (get_type_hints(tp), frozenset(required)))
