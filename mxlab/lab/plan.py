"""Topology -> LabPlan: every address, port, record, user and node config, derived once.

A pure function of the topology, the runtime and the lab directory; the runtimes,
the checks and the CLI read the plan and never the YAML.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mxlab.lab.errors import LabError
from mxlab.lab.mailauth import DkimKeyPlan, auth_records, cpu_count, dkim_keys, relay_auth
from mxlab.lab.mtasts import served_policies
from mxlab.lab.topology import Role, Service, Topology, TopologyError, role_of
from mxlab.nodes.config import (
    DnsNodeConfig,
    DnsRecord,
    Endpoint,
    ExternalNodeConfig,
    LocalDomain,
    MtaSts,
    NodeConfig,
    QueuePolicy,
    RelayDomain,
    RelayNodeConfig,
    ResolverNodeConfig,
    SinkNodeConfig,
    StoreNodeConfig,
    StoreUser,
    TlsFiles,
    Zone,
)
from mxlab.nodes.passwords import hash_password

RuntimeName = Literal["local", "docker", "swarm", "hosts"]
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

STANDARD_PORTS = {"dns": 53, "smtp": 25, "submission": 587, "lmtp": 24, "imap": 143, "pop3": 110}
STANDARD_PORTS |= {"submissions": 465, "imaps": 993, "pop3s": 995}  # RFC 8314 implicit TLS
STANDARD_PORTS["https"] = 443  # MTA-STS policy hosts (RFC 8461 §3.3)
# One lab-wide unprivileged set: every node has its own address, so they never collide.
UNPRIVILEGED_PORTS = {
    "dns": 5353,
    "smtp": 2525,
    "submission": 2587,
    "lmtp": 2424,
    "imap": 2143,
    "pop3": 2110,
    "submissions": 2465,
    "imaps": 2993,
    "pop3s": 2995,
    "https": 2443,
}
CONTAINER_NODE_DIR = "/mxlab"  # each node's lab directory is mounted here in docker
HOSTS_ROOT = "/var/lib/mxlab"  # the hosts runtime keeps each node's directory below this
# by role: each waits on the ones before it (a resolver on the DNS, relays on stores)
START_ORDER = ("dns", "resolver", "store", "sink", "relay", "external")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodePlan(_Model):
    name: str
    role: Role  # what it does: the config it gets (a postfix node reads a relay's config)
    kind: str = ""  # which software (mxlab.lab.kinds); plans older than kinds: the role
    fqdn: str
    address: str
    ports: dict[str, int]  # service -> port, as clients outside the node reach it
    config: NodeConfig
    placement: str | None = None  # swarm/hosts runtimes: the topology's placement

    @model_validator(mode="after")
    def _kind(self) -> NodePlan:
        if not self.kind:
            self.kind = self.role
        return self


class UserPlan(_Model):
    address: str
    # Never written to plan.json: the lab directory keeps passwords in its 0600 secrets
    # file only (nodes get hashes); labdir.read_plan puts them back for clients.
    password: str = Field(default="", exclude=True, repr=False)
    domain: str
    submission: str  # relay node that takes this user's outgoing mail
    store: str  # store node that holds this user's mailbox


class DomainPlan(_Model):
    mx: list[tuple[int, str]]  # (preference, node), sorted
    store: str  # "" when its mail leaves the lab (every MX a sink or external)
    submission: str


class LabPlan(_Model):
    lab: str
    runtime: RuntimeName
    subnet: str
    lab_dir: str
    nodes: dict[str, NodePlan]
    domains: dict[str, DomainPlan]
    users: list[UserPlan]
    zones: list[Zone]
    checks: list[Any] = []  # the topology's own checks, run by `mxlab run` and `mxlab check`
    dkim: list[DkimKeyPlan] = []  # the domains' DKIM keys (private halves: lab dir only)
    forwards: dict[str, list[str]] = {}  # address -> where its mail is forwarded

    @property
    def dns_node(self) -> NodePlan:
        """The lab's one DNS node (the topology requires exactly one)."""
        return next(n for n in self.nodes.values() if n.role == "dns")

    def node_by_fqdn(self, fqdn: str) -> NodePlan | None:
        fqdn = fqdn.lower().rstrip(".")
        return next((n for n in self.nodes.values() if n.fqdn == fqdn), None)

    def user(self, address: str) -> UserPlan:
        for u in self.users:
            if u.address.lower() == address.lower():
                return u
        raise KeyError(address)

    def start_order(self) -> list[NodePlan]:
        """DNS first, then stores, then relays: each waits on the ones before it."""
        return sorted(self.nodes.values(), key=lambda n: START_ORDER.index(n.role))


def node_root(runtime: RuntimeName, lab: str, node: str) -> str:
    """Where a node's directory is on its machine: mounted or copied to one path in a
    container; per lab and node on a shared host (the hosts runtime)."""
    return f"{HOSTS_ROOT}/{lab}/{node}" if runtime == "hosts" else CONTAINER_NODE_DIR


def default_local_subnet(lab_dir: str) -> str:
    """A /24 in 127/8 derived from the lab's directory (its MXLAB_HOME and name), so labs
    rarely share addresses, even labs of one name in two homes (parallel test runs)."""
    h = int.from_bytes(hashlib.sha256(lab_dir.encode()).digest()[:4], "big")
    return f"127.{64 + h % 128}.{(h >> 8) % 256}.0/24"


def ports_for(runtime: RuntimeName, privileged: bool) -> dict[str, int]:
    return dict(STANDARD_PORTS if runtime != "local" or privileged else UNPRIVILEGED_PORTS)


def make_plan(
    topo: Topology,
    *,
    runtime: RuntimeName,
    lab_dir: Path,
    subnet: str | None = None,
    privileged: bool = False,
    known_hashes: Mapping[str, str] | None = None,
) -> LabPlan:
    """Derive the whole lab. ``subnet`` is required for docker (the runtime picks it).
    ``known_hashes`` (address -> hash) are kept instead of hashing anew: a running lab
    planned again keeps its unchanged users' node configs as they are."""
    if subnet is None:
        if runtime != "local":
            subnet = topo.settings.docker_subnet
        else:
            subnet = topo.settings.local_subnet or default_local_subnet(str(lab_dir))
    if subnet is None:
        raise ValueError("the docker runtime must choose a subnet")
    net = ipaddress.ip_network(subnet)
    ports = ports_for(runtime, privileged) | topo.settings.ports
    fqdns = _hostnames(topo)
    order, addresses = _addresses(topo, net)

    domains = {
        dom: DomainPlan(
            mx=sorted((mx.preference, mx.node) for mx in spec.mx),
            store=spec.store or "",
            submission=spec.submission or min(spec.mx, key=lambda m: m.preference).node,
        )
        for dom, spec in topo.domains.items()
    }
    users = [
        UserPlan(
            address=f"{local}@{dom}",
            password=password,
            domain=dom,
            submission=domains[dom].submission,
            store=spec.store or "",
        )
        for dom, spec in topo.domains.items()
        for local, password in spec.users.items()
    ]
    known = known_hashes or {}
    todo = {u.address: u.password for u in users if not known.get(u.address)}
    # scrypt and RSA key generation leave the GIL: one pool, a thread per core, the keys
    # queued behind the hashes (map submits them all at once), so no core waits for the
    # other's last hash
    with ThreadPoolExecutor(cpu_count()) as pool:
        hashing = pool.map(hash_password, todo.values())
        keys = dkim_keys(topo, lab_dir, pool)
        fresh = dict(zip(todo, hashing, strict=True))
    hashes = {u.address: known.get(u.address) or fresh[u.address] for u in users}
    index = _Index.of(topo, domains, users, keys)
    index.smtp_ports = {  # peers outside the lab listen where they listen, not on our port
        addresses[n]: outside_ports(s.ports)["smtp"]
        for n, s in topo.nodes.items()
        if s.kind == "external" and outside_ports(s.ports)["smtp"] != ports["smtp"]
    }
    dns_node = next(n for n, s in topo.nodes.items() if role_of(s.kind) == "dns")
    dns = Endpoint(host=addresses[dns_node], port=ports["dns"])
    zones = _zones(topo, fqdns, addresses, net, keys)

    nodes: dict[str, NodePlan] = {}
    for name in order:
        spec = topo.nodes[name]
        state_dir = (
            f"{node_root(runtime, topo.name, name)}/state"
            if runtime != "local"
            else str(lab_dir / "nodes" / name / "state")
        )
        base: dict[str, Any] = dict(
            lab=topo.name,
            node=name,
            fqdn=fqdns[name],
            address=addresses[name],
            state_dir=state_dir,
        )
        tls_dir = (
            f"{node_root(runtime, topo.name, name)}/tls"
            if runtime != "local"
            else str(lab_dir / "nodes" / name / "tls")
        )
        tls = TlsFiles(cert=f"{tls_dir}/cert.pem", key=f"{tls_dir}/key.pem", ca=f"{tls_dir}/ca.pem")
        config: NodeConfig
        role = role_of(spec.kind)
        if role == "external":
            node_ports = outside_ports(spec.ports)
            config = ExternalNodeConfig(**base, ports=node_ports)
        elif role == "sink":
            node_ports = {"smtp": ports["smtp"]}
            config = SinkNodeConfig(
                **base,
                smtp_port=ports["smtp"],
                max_message_size=topo.settings.max_message_size,
                tls=tls,
            )
        elif role == "resolver":
            node_ports = {"dns": ports["dns"]}
            config = ResolverNodeConfig(
                **base,
                port=ports["dns"],
                dns=dns,
                stub_zones=[z.origin for z in zones],
                allow=[str(net), "127.0.0.0/8"],
            )
        elif role == "dns":
            config = DnsNodeConfig(**base, port=ports["dns"], zones=zones)
            node_ports = {"dns": ports["dns"]}
        elif role == "store":
            node_ports = {k: ports[k] for k in ("lmtp", "imap", "pop3", "imaps", "pop3s")}
            served = index.stored[name]
            config = StoreNodeConfig(
                **base,
                lmtp_port=ports["lmtp"],
                imap_port=ports["imap"],
                pop3_port=ports["pop3"],
                imaps_port=ports["imaps"],
                pop3s_port=ports["pop3s"],
                domains=served,
                users={
                    u.address: StoreUser(password_hash=hashes[u.address])
                    for d in served
                    for u in index.users[d]
                },
                allow_plaintext_auth=topo.settings.allow_plaintext_auth,
                tls=tls,
            )
        else:
            node_ports = {k: ports[k] for k in ("smtp", "submission", "submissions")}
            config = _relay_config(
                topo, name, base, ports, addresses, dns, domains, index, hashes, tls
            )
            auth_dir = f"{tls_dir.rsplit('/', 1)[0]}/auth"
            final = list(config.local_domains)
            ours = {n for d in final for _, n in domains[d].mx if n != name}
            internal = [*config.trusted_clients, *(addresses[n] for n in sorted(ours))]
            auth = relay_auth(
                topo, name, index.keys, auth_dir, index.submits[name], final, internal
            )
            policies = served_policies(topo, name, fqdns) if name in index.sts_hosts else {}
            sts = MtaSts(port=ports["https"], policies=policies)
            config = config.model_copy(update={"mailauth": auth, "mta_sts": sts})
            if sts.policies:  # RFC 8461 §3.3: it serves policies over HTTPS
                node_ports["https"] = ports["https"]
        nodes[name] = NodePlan(
            name=name,
            role=role,
            kind=spec.kind,
            placement=spec.placement,
            fqdn=fqdns[name],
            address=addresses[name],
            ports=node_ports,
            config=config,
        )
    return LabPlan(
        lab=topo.name,
        runtime=runtime,
        subnet=str(net),
        lab_dir=str(lab_dir),
        nodes=nodes,
        domains=domains,
        users=users,
        zones=zones,
        checks=topo.checks,
        dkim=keys,
        forwards={
            f"{lp}@{dom}": targets
            for dom, spec in topo.domains.items()
            for lp, targets in spec.forwards.items()
        },
    )


class _Index:
    """Who serves what, gathered in one pass over the topology, so that each node's
    config is made from its own entries: scanning every domain, user and node for each
    relay and store made a 400-domain plan grow with N squared."""

    def __init__(self) -> None:
        self.stored: dict[str, list[str]] = {}  # store node -> its domains
        self.mx: dict[str, list[str]] = {}  # node -> the domains listing it as an MX
        self.submits: dict[str, list[str]] = {}  # relay -> the domains it takes mail for
        self.users: dict[str, list[UserPlan]] = {}  # domain -> its users
        self.trusted: dict[str, list[str]] = {}  # relay -> the nodes it is next hop of
        self.keys: dict[str, list[DkimKeyPlan]] = {}  # domain -> its DKIM keys
        self.sts_hosts: set[str] = set()  # relays serving an MTA-STS policy
        self.smtp_ports: dict[str, int] = {}  # external peers' SMTP ports, by address

    @classmethod
    def of(
        cls,
        topo: Topology,
        domains: dict[str, DomainPlan],
        users: list[UserPlan],
        keys: list[DkimKeyPlan],
    ) -> _Index:
        index = cls()
        for name in topo.nodes:
            for table in (index.stored, index.mx, index.submits, index.trusted):
                table[name] = []
        for dom, plan in domains.items():
            if plan.store:
                index.stored[plan.store].append(dom)
            for node in dict.fromkeys(n for _, n in plan.mx):
                index.mx[node].append(dom)
            index.submits[plan.submission].append(dom)
            index.users[dom] = []
            sts = topo.domains[dom].auth.mta_sts
            if sts is not None:
                index.sts_hosts.add(sts.node)
        for user in users:
            index.users[user.domain].append(user)
        for name, spec in topo.nodes.items():
            if spec.next_hop:
                index.trusted[spec.next_hop].append(name)
        for key in keys:
            index.keys.setdefault(key.domain, []).append(key)
        return index


def _relay_config(
    topo: Topology,
    name: str,
    base: dict[str, Any],
    ports: dict[str, int],
    addresses: dict[str, str],
    dns: Endpoint,
    domains: dict[str, DomainPlan],
    index: _Index,
    hashes: dict[str, str],
    tls: TlsFiles,
) -> RelayNodeConfig:
    """A relay is final (LMTP to the store) for domains where it is a best MX, backup
    for the others that list it, and takes submission for the domains that name it."""
    local: dict[str, LocalDomain] = {}
    backup: dict[str, RelayDomain] = {}
    for dom in index.mx[name]:
        plan = domains[dom]
        prefs = [p for p, n in plan.mx if n == name]
        locals_ = [*topo.domains[dom].users, *topo.domains[dom].forwards]
        if min(prefs) == plan.mx[0][0]:
            lmtp = Endpoint(host=addresses[plan.store], port=ports["lmtp"])
            local[dom] = LocalDomain(lmtp=lmtp, users=locals_)
        else:
            backup[dom] = RelayDomain(users=locals_, preference=min(prefs))
    hop = topo.nodes[name].next_hop
    resolver = topo.nodes[name].resolver
    smtp_ports = dict(index.smtp_ports)
    return RelayNodeConfig(
        **base,
        smtp_port=ports["smtp"],
        submission_port=ports["submission"],
        submissions_port=ports["submissions"],
        remote_smtp_port=ports["smtp"],
        dns=Endpoint(host=addresses[resolver], port=ports["dns"]) if resolver else dns,
        local_domains=local,
        relay_domains=backup,
        auth_users={
            u.address: hashes[u.address] for dom in index.submits[name] for u in index.users[dom]
        },
        sender_aliases={
            f"{local}@{dom}": addresses_
            for dom in index.submits[name]
            for local, addresses_ in topo.domains[dom].send_as.items()
        },
        trusted_clients=[addresses[n] for n in index.trusted[name]],
        next_hop=Endpoint(host=addresses[hop], port=smtp_ports.get(addresses[hop], ports["smtp"]))
        if hop
        else None,
        smtp_ports=smtp_ports,
        max_message_size=topo.settings.max_message_size,
        allow_plaintext_auth=topo.settings.allow_plaintext_auth,
        queue=QueuePolicy(**topo.settings.queue.model_dump()),
        tls=tls,
    )


def outside_ports(ports: Mapping[Service, int]) -> dict[str, int]:
    """An external node's ports: SMTP on 25 unless the topology says otherwise."""
    return {"smtp": 25} | {str(k): v for k, v in ports.items()}


def _hostnames(topo: Topology) -> dict[str, str]:
    """Each node's FQDN: its own ``hostname``, else ``<node>.<first domain naming it>``."""
    first_domain = next(iter(topo.domains))
    named_by: dict[str, str] = {}
    for dom, spec in topo.domains.items():
        for ref in [spec.store, *(m.node for m in spec.mx), spec.submission]:
            if ref is not None:
                named_by.setdefault(ref, dom)
    return {
        name: (spec.hostname or f"{name}.{named_by.get(name, first_domain)}").lower()
        for name, spec in topo.nodes.items()
    }


def zone_of(name: str, origins: Collection[str]) -> str | None:
    """The longest lab zone origin that contains ``name`` (both without trailing dot):
    the name's own suffixes looked up, longest first, so a set or dict of origins
    costs a name's labels, not the lab's zones."""
    labels = name.lower().rstrip(".").split(".")
    for i in range(len(labels)):
        suffix = ".".join(labels[i:])
        if suffix in origins:
            return suffix
    return None


def reverse_zone_origin(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """RFC 1035 §3.5: the in-addr.arpa zone on the octet boundary covering the subnet."""
    octets = max(1, net.prefixlen // 8)
    parts = str(net.network_address).split(".")[:octets]
    return ".".join(reversed(parts)) + ".in-addr.arpa"


def _soa(origin: str, ns: str) -> DnsRecord:
    return DnsRecord(
        name=f"{origin}.",
        type="SOA",
        ttl=300,
        rdata=f"{ns}. hostmaster.{origin}. 1 3600 600 86400 60",
    )


def _addresses(
    topo: Topology, net: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> tuple[list[str], dict[str, str]]:
    """Nodes in start order, and their addresses in that order from .2 up; an external
    node keeps its own ("host": this machine, as the lab's nodes reach it)."""
    hosts = iter(net.hosts())
    next(hosts)  # .1 is the docker bridge's gateway; keep the layout the same everywhere
    order = sorted(topo.nodes, key=lambda n: START_ORDER.index(role_of(topo.nodes[n].kind)))
    ours = [n for n in order if topo.nodes[n].address is None]
    addresses = {name: str(ip) for name, ip in zip(ours, hosts, strict=False)}
    if len(addresses) < len(ours):  # validation refuses this; a topology built in code may not
        raise LabError(f"{len(order)} nodes do not fit {net}: pin a larger subnet in settings")
    local = isinstance(net, ipaddress.IPv4Network) and net.subnet_of(_LOOPBACK)
    on_host = "127.0.0.1" if local else str(net.network_address + 1)
    for name in order:
        where = topo.nodes[name].address
        if where is not None:
            addresses[name] = on_host if where == "host" else where
    return order, addresses


def check_zones(topo: Topology, source: str) -> None:
    """Load every zone the lab would serve the way its DNS node will, so that a clash among
    extra records (a CNAME beside other data, an MX at a CNAME) is a topology error."""
    from mxlab.dns.zones import load_zone

    net = ipaddress.ip_network(topo.settings.local_subnet or default_local_subnet(topo.name))
    for zone in _zones(
        topo, _hostnames(topo), _addresses(topo, net)[1], net, dkim_keys(topo, None)
    ):
        try:
            load_zone(zone)
        except ValueError as exc:
            fix = "change or remove that record"
            raise TopologyError(source, "records", str(exc), fix) from None


def _zones(
    topo: Topology,
    fqdns: dict[str, str],
    addresses: dict[str, str],
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    keys: list[DkimKeyPlan],
) -> list[Zone]:
    """SOA, NS, A for every node, MX per domain, mail authentication (SPF, DKIM, DMARC),
    extra records; PTR in the reverse zone."""
    ns = fqdns[next(n for n, s in topo.nodes.items() if role_of(s.kind) == "dns")]
    origins = list(topo.domains)
    records: dict[str, list[DnsRecord]] = {
        o: [_soa(o, ns), DnsRecord(name=f"{o}.", type="NS", rdata=f"{ns}.")] for o in origins
    }
    for name, fqdn in fqdns.items():
        origin = zone_of(fqdn, records)
        if origin is not None:
            records[origin].append(DnsRecord(name=f"{fqdn}.", type="A", rdata=addresses[name]))
    for dom, spec in topo.domains.items():
        for mx in spec.mx:
            records[dom].append(
                DnsRecord(name=f"{dom}.", type="MX", rdata=f"{mx.preference} {fqdns[mx.node]}.")
            )
    for auth in auth_records(topo, fqdns, addresses, keys):
        records[zone_of(auth.name, records) or origins[0]].append(auth)
    for rec in topo.records:
        origin = zone_of(rec.name, records)
        assert origin is not None  # the topology validator guarantees it
        records[origin].append(
            DnsRecord(name=rec.name.rstrip(".") + ".", type=rec.type, ttl=rec.ttl, rdata=rec.value)
        )
    rev = reverse_zone_origin(net)
    ptrs = [_soa(rev, ns), DnsRecord(name=f"{rev}.", type="NS", rdata=f"{ns}.")]
    for name, addr in addresses.items():
        if ipaddress.ip_address(addr) not in net:
            continue  # an external node's: its own reverse zone is not the lab's
        ptr = ipaddress.ip_address(addr).reverse_pointer
        ptrs.append(DnsRecord(name=f"{ptr}.", type="PTR", rdata=f"{fqdns[name]}."))
    return [Zone(origin=f"{o}.", records=r) for o, r in records.items()] + [
        Zone(origin=f"{rev}.", records=ptrs)
    ]


def predict_route(plan: LabPlan, sender: str, rcpt: str) -> list[set[str]]:
    """The hosts whose ``Received: by`` a message should carry, in order; a set where
    equal MX preferences leave a choice (RFC 5321 §5.1 shuffles them)."""
    node = plan.nodes[plan.user(sender).submission]
    dom = rcpt.rsplit("@", 1)[1].lower()
    route: list[set[str]] = [{node.fqdn}]
    for _ in range(len(plan.nodes) + 1):
        cfg = node.config
        assert isinstance(cfg, RelayNodeConfig)
        if dom in cfg.local_domains:
            route.append({plan.nodes[plan.domains[dom].store].fqdn})
            return route
        if cfg.next_hop is not None and dom not in cfg.relay_domains:
            nxt = [n for n in plan.nodes.values() if n.address == cfg.next_hop.host]
            choices = nxt[:1]
        else:
            mx = plan.domains[dom].mx
            limit = cfg.relay_domains[dom].preference if dom in cfg.relay_domains else None
            usable = [(p, n) for p, n in mx if limit is None or p < limit]
            best = usable[0][0]
            choices = [plan.nodes[n] for p, n in usable if p == best]
        route.append({c.fqdn for c in choices})
        node = choices[0]
    raise ValueError(f"no route from {sender} to {rcpt}")
