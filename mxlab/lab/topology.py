"""The user's YAML topology, validated into a ``Topology`` with located, one-line errors."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mxlab.dns.zones import parse_record
from mxlab.nodes.config import DnsRecord

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^({_LABEL}\.)+{_LABEL}$")
_NODE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_LOCALPART_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")


class TopologyError(Exception):
    """One line: ``file: field: what is wrong (fix)``."""

    def __init__(self, source: str, field: str, message: str, fix: str = "") -> None:
        self.source, self.field, self.message, self.fix = source, field, message, fix
        line = f"{source}: {field}: {message}" if field else f"{source}: {message}"
        super().__init__(f"{line} ({fix})" if fix else line)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueueSettings(_Model):
    retry_initial: float = Field(2.0, gt=0)
    retry_max: float = Field(30.0, gt=0)
    lifetime: float = Field(300.0, gt=0)
    delay_warning: float | None = Field(None, gt=0)
    concurrency_per_destination: int = Field(4, ge=1, le=100)


Service = Literal[
    "dns", "smtp", "submission", "lmtp", "imap", "pop3", "submissions", "imaps", "pop3s"
]


class Settings(_Model):
    queue: QueueSettings = QueueSettings()
    ports: dict[Service, Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=dict)
    local_subnet: str | None = None  # 127.x.y.0/24 for the local runtime
    docker_subnet: str | None = None  # pinned subnet for the docker runtime
    max_message_size: int = Field(10 * 1024 * 1024, gt=1024)
    allow_plaintext_auth: bool = False  # true: passwords before TLS, for a lesson

    @field_validator("local_subnet", "docker_subnet")
    @classmethod
    def _subnet(cls, v: str | None) -> str | None:
        if v is None:
            return v
        net = ipaddress.ip_network(v, strict=True)
        if net.prefixlen > 28:
            raise ValueError("subnet too small: use a /24 or larger")
        return str(net)


class NodeSpec(_Model):
    kind: Literal["dns", "relay", "store"]
    hostname: str | None = None  # FQDN; default <node>.<first domain that names it>
    next_hop: str | None = None  # relays only: smarthost node


class MxSpec(_Model):
    node: str
    preference: int = Field(10, ge=0, le=65535)


class DomainSpec(_Model):
    store: str
    mx: list[MxSpec] = Field(min_length=1)
    submission: str | None = None  # relay that takes its users' mail; default: best MX
    users: dict[str, str] = Field(min_length=1)  # local part -> password


class RecordSpec(_Model):
    name: str
    type: Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "PTR", "SRV", "CAA"]
    value: str
    ttl: int = Field(300, ge=0)


class Topology(_Model):
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
    for name, node in topo.nodes.items():
        if not _NODE_RE.match(name):
            raise TopologyError(src, f"nodes.{name}", "bad node name", "use a-z, 0-9 and '-'")
        if node.next_hop is not None:
            if node.kind != "relay":
                raise TopologyError(
                    src, f"nodes.{name}.next_hop", "only relays have a next hop", "remove it"
                )
            hop = topo.nodes.get(node.next_hop)
            if hop is None or hop.kind != "relay":
                raise TopologyError(
                    src,
                    f"nodes.{name}.next_hop",
                    f"no relay named {node.next_hop!r}",
                    f"use one of: {', '.join(_of_kind(topo, 'relay'))}",
                )
            if node.next_hop == name:
                raise TopologyError(
                    src, f"nodes.{name}.next_hop", "a relay cannot be its own next hop"
                )
        if node.hostname is not None and not _DOMAIN_RE.match(node.hostname):
            raise TopologyError(
                src, f"nodes.{name}.hostname", f"{node.hostname!r} is not a host name"
            )
    _check_hop_loops(topo, src)
    dns_nodes = _of_kind(topo, "dns")
    if len(dns_nodes) != 1:
        raise TopologyError(
            src, "nodes", f"need exactly one node of kind dns, found {len(dns_nodes)}"
        )
    for dom, spec in topo.domains.items():
        where = f"domains.{dom}"
        if not _DOMAIN_RE.match(dom):
            raise TopologyError(src, where, "not a domain name", "use e.g. alpha.test")
        if not dom.endswith(".test"):
            raise TopologyError(
                src, where, "lab domains must end in .test", "RFC 6761 reserves .test for labs"
            )
        _check_node_ref(topo, src, f"{where}.store", spec.store, "store")
        for i, mx in enumerate(spec.mx):
            _check_node_ref(topo, src, f"{where}.mx[{i}].node", mx.node, "relay")
        if spec.submission is not None:
            _check_node_ref(topo, src, f"{where}.submission", spec.submission, "relay")
        seen: set[str] = set()
        for user, password in spec.users.items():
            if not _LOCALPART_RE.match(user):
                raise TopologyError(
                    src, f"{where}.users.{user}", "bad user name", "use letters, digits, . _ + -"
                )
            if user.lower() in seen:
                raise TopologyError(
                    src, f"{where}.users.{user}", "duplicate user", "user names are case-blind"
                )
            seen.add(user.lower())
            if not password:
                raise TopologyError(src, f"{where}.users.{user}", "empty password")
    for i, rec in enumerate(topo.records):
        if not _in_lab(topo, rec.name):
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
        if node.hostname and not _in_lab(topo, node.hostname):
            raise TopologyError(
                src,
                f"nodes.{name}.hostname",
                f"{node.hostname!r} is outside the lab's domains (its A and PTR could not agree)",
                f"use a name under {', '.join(topo.domains)}",
            )


def _in_lab(topo: Topology, name: str) -> bool:
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


def _of_kind(topo: Topology, kind: str) -> list[str]:
    return [n for n, spec in topo.nodes.items() if spec.kind == kind]


def _check_node_ref(topo: Topology, src: str, field: str, ref: str, kind: str) -> None:
    node = topo.nodes.get(ref)
    if node is None or node.kind != kind:
        known = ", ".join(_of_kind(topo, kind)) or f"(none: add a node of kind {kind})"
        what = f"no node named {ref!r}" if node is None else f"{ref!r} is a {node.kind}"
        raise TopologyError(src, field, f"{what}, need a {kind}", f"use one of: {known}")


def read_yaml(text: str, source: str) -> dict[str, Any]:
    """YAML to a mapping; syntax errors and duplicate keys are ``TopologyError``s."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(where, "", f"YAML syntax error: {problem}", "fix the YAML") from None
    _check_duplicate_keys(text, source)
    if not isinstance(data, dict):
        raise TopologyError(source, "", "top level must be a mapping", "start with 'name: ...'")
    return data


def validation_error(
    exc: ValidationError, source: str, skip: set[Any] = frozenset()
) -> TopologyError:
    """The first pydantic error as one located line; ``skip`` drops union tags from the path."""
    err = exc.errors()[0]
    field = field_path(tuple(p for p in err["loc"] if p not in skip)) or "(top level)"
    return TopologyError(source, field, _explain(err), _fix(err))


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse and validate topology YAML; every mistake is a ``TopologyError``."""
    data = read_yaml(text, source)
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    _check_refs(topo, source)
    from mxlab.lab.plan import check_zones  # the planner builds on this module

    check_zones(topo, source)
    from mxlab.lab.scenario import topology_checks  # scenarios build on this module

    topology_checks(topo, source)
    return topo


def _check_duplicate_keys(text: str, source: str) -> None:
    """YAML loaders keep the last of two equal keys; a lab must not lose a user that way."""

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                here = f"{path}.{name}" if path else name
                if name in seen:
                    raise TopologyError(
                        source,
                        here,
                        f"duplicate key (lines {seen[name]} and {key.start_mark.line + 1})",
                        "keep one of them",
                    )
                seen[name] = key.start_mark.line + 1
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, "")


def _explain(err: dict[str, Any]) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return msg[0].lower() + msg[1:] if msg else msg


def _fix(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "missing":
        return "add it"
    if kind == "literal_error":
        return f"use {err.get('ctx', {}).get('expected', 'an allowed value')}"
    if kind.startswith(("less_than", "greater_than")):
        return "use a value in range"
    return ""


def load_topology(path: str | Path) -> Topology:
    """Read a topology file; a missing file is a ``TopologyError`` too."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TopologyError(str(p), "", f"cannot read: {exc.strerror}") from None
    return parse_topology(text, str(p))
