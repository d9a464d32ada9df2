"""`mxlab explain|dig|shell`: look inside a lab - a node's configuration in words, the
lab DNS's answers, a shell where the node runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

import typer

import mxlab
from mxlab.cli.app import app, argument, attach, out, split_lab
from mxlab.cli.graph import plan_or_lab
from mxlab.lab.plan import LabPlan, NodePlan
from mxlab.nodes.config import DnsNodeConfig, RelayNodeConfig, StoreNodeConfig

Lookup = Callable[[str, str], tuple[str, list[str]]] | None  # Lab.dns, or None for a file


def _who(plan: LabPlan, address: str) -> str:
    node = next((n for n in plan.nodes.values() if n.address == address), None)
    return f"{node.name} ({node.fqdn}, {address})" if node else address


def _tls(n: NodePlan) -> list[str]:
    cfg = n.config
    if not isinstance(cfg, RelayNodeConfig | StoreNodeConfig) or cfg.tls is None:
        return []
    auth = (
        "allowed before STARTTLS (settings.allow_plaintext_auth)"
        if cfg.allow_plaintext_auth
        else "refused until the client has started TLS"
    )
    return [
        f"TLS: a certificate for {n.fqdn} signed by the lab CA ({cfg.tls.cert}); "
        f"STARTTLS on the plaintext ports, implicit TLS on the RFC 8314 ports; "
        f"passwords are {auth}."
    ]


def _route(plan: LabPlan, dom: str, ask: Lookup) -> str:
    """How a relay without a smarthost finds a domain's server: by DNS (RFC 5321 §5.1)."""
    if ask is not None:
        rcode, mx = ask(dom, "MX")
        if rcode != "NOERROR":
            return f"asks the lab DNS for MX {dom}: {rcode} - mail waits in the queue"
        answers = []
        for rdata in sorted(mx, key=lambda r: int(r.split()[0])):
            pref, host = rdata.split()
            a_rcode, addrs = ask(host, "A")
            where = ", ".join(_who(plan, a) for a in addrs) or f"no address ({a_rcode})"
            answers.append(f"MX {pref} {host} -> {where}")
        return f"asks the lab DNS for MX {dom} (live): " + "; ".join(answers or ["no MX"])
    zone = ", ".join(f"{pref} {plan.nodes[n].fqdn}" for pref, n in plan.domains[dom].mx)
    return f"asks the lab DNS for MX {dom} (the zone says: {zone}), lowest preference first"


def explain_relay(plan: LabPlan, n: NodePlan, ask: Lookup) -> list[str]:
    cfg = n.config
    assert isinstance(cfg, RelayNodeConfig)
    p = n.ports
    lines = [
        f"{n.name} is an SMTP relay, {n.fqdn} at {n.address}.",
        f"Ports: SMTP {p['smtp']} (mail from other servers, no login), submission "
        f"{p['submission']} (the users' clients: STARTTLS, then AUTH), submissions "
        f"{p.get('submissions', '-')} (the same over implicit TLS).",
        *_tls(n),
    ]
    for dom, local in cfg.local_domains.items():
        lines.append(
            f"Accepts mail for {dom} as its best MX: users {', '.join(local.users)}; anyone "
            f"else is refused at RCPT (550). It hands the mail to the store "
            f"{_who(plan, local.lmtp.host)} by LMTP on port {local.lmtp.port}."
        )
    for dom, backup in cfg.relay_domains.items():
        lines.append(
            f"Accepts mail for {dom} as a backup MX (preference {backup.preference}): "
            f"queues it and forwards it to an MX with a lower preference once one answers."
        )
    if cfg.auth_users:
        lines.append(f"Takes submitted mail from {', '.join(cfg.auth_users)} (after AUTH).")
    if cfg.trusted_clients:
        who = ", ".join(_who(plan, a) for a in cfg.trusted_clients)
        lines.append(f"Relays anything from {who}: relays that use it as their next hop.")
    lines.append("Refuses to relay for anyone else (no open relay): 554 at RCPT.")
    others = [d for d in plan.domains if d not in cfg.local_domains]
    if cfg.next_hop is not None:
        lines.append(
            f"Sends mail for every other domain ({', '.join(others) or 'none in the lab'}) "
            f"to its next hop (smarthost) {_who(plan, cfg.next_hop.host)} port "
            f"{cfg.next_hop.port}, without looking at DNS."
        )
    else:
        dns = f"{_who(plan, cfg.dns.host)} port {cfg.dns.port}"
        lines.append(f"Sends mail for other domains by DNS, asking {dns}:")
        lines += [f"  {dom}: {_route(plan, dom, ask)}" for dom in others]
        lines.append(
            "  If the best MX does not answer it tries the next; if none does it keeps the "
            "mail queued and retries."
        )
    q = cfg.queue
    lines.append(
        f"Queue: first retry after {q.retry_initial:g}s, backing off to {q.retry_max:g}s; "
        f"a message still undelivered after {q.lifetime:g}s bounces to its sender "
        f"(state under {cfg.state_dir})."
    )
    return lines


def explain_store(plan: LabPlan, n: NodePlan) -> list[str]:
    cfg = n.config
    assert isinstance(cfg, StoreNodeConfig)
    p = n.ports
    feeders = [
        m.name
        for m in plan.nodes.values()
        if isinstance(m.config, RelayNodeConfig)
        and any(d.lmtp.host == n.address for d in m.config.local_domains.values())
    ]
    return [
        f"{n.name} is a mail store, {n.fqdn} at {n.address}: it keeps the mailboxes "
        f"(Maildir) of {', '.join(cfg.domains) or 'no domain'}.",
        f"Ports: LMTP {p['lmtp']} (mail in, from {', '.join(feeders) or 'no relay'}), IMAP "
        f"{p['imap']} and POP3 {p['pop3']} (STARTTLS), IMAPS {p.get('imaps', '-')} and "
        f"POP3S {p.get('pop3s', '-')} (implicit TLS).",
        *_tls(n),
        f"Users (log in with the full address): {', '.join(cfg.users) or 'none'}.",
        "Mail for a domain or user it does not know is refused over LMTP.",
    ]


def explain_dns(plan: LabPlan, n: NodePlan) -> list[str]:
    cfg = n.config
    assert isinstance(cfg, DnsNodeConfig)
    zones = ", ".join(f"{z.origin} ({len(z.records)} records)" for z in cfg.zones)
    return [
        f"{n.name} is the lab's authoritative DNS server, {n.fqdn} at {n.address}, "
        f"UDP and TCP port {cfg.port}.",
        f"Zones: {zones}. Every relay asks it for MX and A records.",
        "Faults (mxlab dns fail) are read from its state folder on SIGHUP; record "
        "changes (mxlab dns add/remove) restart it.",
    ]


def explanation(plan: LabPlan, node: str, ask: Lookup = None) -> list[str]:
    """The node's generated configuration in sentences; ``ask`` queries the running
    lab's DNS so routes show what DNS answers now, not what the topology meant."""
    if node not in plan.nodes:
        raise mxlab.LabError(f"lab {plan.lab} has no node {node!r} ({', '.join(plan.nodes)})")
    n = plan.nodes[node]
    if n.role == "relay":
        return explain_relay(plan, n, ask)
    if n.role == "store":
        return explain_store(plan, n)
    if n.role in OTHERS:
        ports = ", ".join(f"{s} {p}" for s, p in n.ports.items())
        return [f"{n.name} ({n.fqdn}, {n.address}): {OTHERS[n.role]}; {ports}."]
    return explain_dns(plan, n)


OTHERS = {
    "sink": "an SMTP sink: takes mail for any recipient and keeps it (mxlab sink list)",
    "external": "a server outside the lab, not run by mxlab: relays send to it as told",
    "resolver": "a recursive resolver (unbound) with the lab's zones as stub zones",
}


@app.command()
def explain(args: Annotated[list[str], argument("[LAB|FILE] NODE")]) -> None:
    """A node's configuration in words: the domains it accepts, where it sends each one
    and why (MX preferences, next hop, LMTP store), its ports, TLS and users."""
    target, (node,) = split_lab(args, "[LAB|FILE] NODE")
    plan, lab = plan_or_lab(target)
    for line in explanation(plan, node, lab.dns if lab is not None else None):
        out.print(line, markup=False)


def _dig_words(words: list[str]) -> tuple[str | None, str, str]:
    """[LAB] NAME [TYPE]: a lab name has no dot, a type is a DNS type's mnemonic."""
    if len(words) == 3:
        return words[0], words[1], words[2]
    if len(words) == 2:
        if "." not in words[1] and words[1].upper().isalpha():
            return None, words[0], words[1]
        return words[0], words[1], "A"
    if len(words) == 1:
        return None, words[0], "A"
    raise mxlab.LabError("expected [LAB] NAME [TYPE]")


@app.command()
def dig(args: Annotated[list[str], argument("[LAB] NAME [TYPE]")]) -> None:
    """Ask the lab's DNS, like a relay does (TYPE defaults to A)."""
    lab, name, rdtype = _dig_words(args)
    rcode, answers = attach(lab).dns(name, rdtype.upper())
    out.print(f";; {name} {rdtype.upper()}: status {rcode}, {len(answers)} answer(s)")
    for rdata in answers:
        out.print(f"{name.rstrip('.')}.\tIN\t{rdtype.upper()}\t{rdata}", markup=False)
    if rcode != "NOERROR":
        raise typer.Exit(1)


@app.command()
def shell(args: Annotated[list[str], argument("[LAB] NODE")]) -> None:
    """An interactive shell in the node's container, or in its folder with the node's
    environment (MXLAB_LAB, MXLAB_NODE) on the local runtime."""
    lab, (node,) = split_lab(args, "[LAB] NODE")
    raise typer.Exit(attach(lab).shell(node))


@app.command()
def fetch(args: Annotated[list[str], argument("[LAB] ADDRESS")]) -> None:
    """Fetch a user's INBOX over IMAP (STARTTLS, the lab CA, the user's password), as the
    user's mail client would: each message's subject, sender and the servers it crossed."""
    lab, (address,) = split_lab(args, "[LAB] ADDRESS")
    messages = attach(lab).mailbox(address).messages()
    out.print(f"{address}: {len(messages)} message(s) in INBOX", markup=False)
    for n, msg in enumerate(messages, start=1):
        received = [" ".join(str(r).split()) for r in reversed(msg.get_all("Received") or [])]
        out.print(f"{n}. {msg['Subject']!s} - from {msg['From']!s}", markup=False)
        out.print(f"   Message-ID {msg['Message-ID']!s}", markup=False)
        for line in received:  # oldest first: the path the message took
            hop = re.match(r"from (\S+) .*?by (\S+)", line)
            text = f"from {hop[1]} by {hop[2]}" if hop else line
            out.print(f"   Received: {text}", markup=False)
