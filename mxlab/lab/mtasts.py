"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) in the plan, for the domains whose
``auth.mta_sts`` asks: the ``_mta-sts`` TXT record with an id that changes with the
policy, ``mta-sts.<domain>`` at the relay serving it, ``_smtp._tls`` with a rua
mailbox, and the policy text that relay serves over HTTPS."""

from __future__ import annotations

import re

from mxlab.lab.errors import TopologyError
from mxlab.lab.topology import Topology, is_address
from mxlab.nodes.config import DnsRecord, NodeConfig, RelayNodeConfig
from mxlab.nodes.mailauth.sts_policy import policy_id, render_policy

# RFC 8461 §3.2: an mx line is a host name, or "*." and a domain (one label's wildcard)
_MX_PATTERN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}$")


def check_mta_sts(topo: Topology, src: str) -> None:
    """The serving node is one of our relays; mx lines and the rua mailbox parse."""
    for dom, spec in topo.domains.items():
        sts = spec.auth.mta_sts
        if sts is None:
            continue
        where = f"domains.{dom}.auth.mta_sts"
        node = topo.nodes.get(sts.node)
        if node is None or node.kind != "relay":
            relays = ", ".join(n for n, s in topo.nodes.items() if s.kind == "relay")
            what = (
                f"no node named {sts.node!r}" if node is None else f"{sts.node!r} is a {node.kind}"
            )
            raise TopologyError(
                src, f"{where}.node", f"{what}; a relay of kind relay serves the policy",
                f"use one of: {relays or '(none: add a node of kind relay)'}",
            )  # fmt: skip
        for i, pattern in enumerate(sts.mx or []):
            if not _MX_PATTERN.match(pattern):
                raise TopologyError(
                    src, f"{where}.mx[{i}]", f"{pattern!r} is not an MX host name or pattern",
                    "write a host name, or *. and a domain (RFC 8461 §3.2)",
                )  # fmt: skip
        if sts.report_to is not None and not is_address(sts.report_to):
            raise TopologyError(
                src, f"{where}.report_to", f"{sts.report_to!r} is not a mail address",
                "write local@domain",
            )  # fmt: skip


def policy_text(topo: Topology, dom: str, fqdns: dict[str, str]) -> str:
    """The domain's policy (RFC 8461 §3.2): its MX hosts unless the topology names others."""
    sts = topo.domains[dom].auth.mta_sts
    assert sts is not None
    mx = sts.mx if sts.mx is not None else [fqdns[m.node] for m in topo.domains[dom].mx]
    return render_policy(sts.mode, mx, sts.max_age)


def sts_records(
    topo: Topology, fqdns: dict[str, str], addresses: dict[str, str]
) -> list[DnsRecord]:
    """RFC 8461 §3.1 TXT, the policy host's A record, RFC 8460 §3 TXT, per asking domain."""
    records: list[DnsRecord] = []
    for dom, spec in topo.domains.items():
        sts = spec.auth.mta_sts
        if sts is None:
            continue
        ident = policy_id(policy_text(topo, dom, fqdns))
        rua = sts.report_to or f"{next(iter(spec.users), 'postmaster')}@{dom}"
        records += [
            DnsRecord(name=f"_mta-sts.{dom}.", type="TXT", rdata=f'"v=STSv1; id={ident}"'),
            DnsRecord(name=f"mta-sts.{dom}.", type="A", rdata=addresses[sts.node]),
            DnsRecord(
                name=f"_smtp._tls.{dom}.", type="TXT", rdata=f'"v=TLSRPTv1; rua=mailto:{rua}"'
            ),
        ]
    return records


def served_policies(topo: Topology, node: str, fqdns: dict[str, str]) -> dict[str, str]:
    """The policies relay ``node`` serves, by domain."""
    return {
        dom: policy_text(topo, dom, fqdns)
        for dom, spec in topo.domains.items()
        if spec.auth.mta_sts is not None and spec.auth.mta_sts.node == node
    }


def cert_names(config: NodeConfig) -> list[str]:
    """Names beside its own that a node's certificate carries: mta-sts.<domain> for each
    policy it serves (RFC 8461 §3.3: the HTTPS certificate must be valid for it)."""
    if not isinstance(config, RelayNodeConfig):
        return []
    return [f"mta-sts.{dom}" for dom in config.mta_sts.policies]
