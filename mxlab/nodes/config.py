"""Node configs: the only contract between the planner and the node programs.

The planner (``mxlab.lab.plan``) writes one of these per node as JSON; a node program
(``python -m mxlab.nodes ROLE --config node.json``) reads it and never sees the
topology. Every field is concrete: addresses, ports and paths as the node will use them
inside its runtime (a container or a local process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class LocalDomain(_Model):
    """A domain this relay is final for: recipients are handed to the store by LMTP."""

    lmtp: Endpoint
    users: list[str]  # local parts that exist; anything else is 550 at RCPT


class RelayDomain(_Model):
    """A domain this relay is a backup MX for: accept, then forward to a better MX."""

    users: list[str]
    preference: int  # our own MX preference: only MX hosts with a lower value are tried


class RelayNodeConfig(NodeBase):
    role: Literal["relay"] = "relay"
    smtp_port: int  # MX traffic (25 in a container or as root)
    submission_port: int  # AUTH submission (587)
    submissions_port: int | None = None  # the same over implicit TLS (465, RFC 8314 §3.3)
    remote_smtp_port: int  # the port other MX hosts listen on (lab-wide)
    dns: Endpoint  # the lab DNS server asked for MX and A records
    local_domains: dict[str, LocalDomain] = Field(default_factory=dict)
    relay_domains: dict[str, RelayDomain] = Field(default_factory=dict)
    auth_users: dict[str, str] = Field(default_factory=dict)  # address -> password hash
    # login -> the other addresses it may send as (Postfix's smtpd_sender_login_maps)
    sender_aliases: dict[str, list[str]] = Field(default_factory=dict)
    trusted_clients: list[str] = Field(default_factory=list)  # may relay anywhere (chains)
    next_hop: Endpoint | None = None  # smarthost for every non-local domain
    max_message_size: int = 10 * 1024 * 1024
    max_received_headers: int = 30  # loop detection
    allow_plaintext_auth: bool = False  # AUTH before STARTTLS (Postfix's smtpd_tls_auth_only)
    login_limits: LoginLimits = LoginLimits()
    queue: QueuePolicy = QueuePolicy()
    tls: TlsFiles | None = None


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


NodeConfig = Annotated[
    DnsNodeConfig | RelayNodeConfig | StoreNodeConfig, Field(discriminator="role")
]


def load_config(path: str | Path) -> DnsNodeConfig | RelayNodeConfig | StoreNodeConfig:
    """Read a node config written by the planner."""
    from pydantic import TypeAdapter

    return TypeAdapter(NodeConfig).validate_json(Path(path).read_bytes())
