"""Who may send what to whom: the RCPT-time relay policy, free of sockets so it is
unit-tested on its own. The relay is never open: a foreign domain is accepted only
from an authenticated session or a trusted client (the relay before us in a chain)."""

from __future__ import annotations

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.mailauth.forward import srs_original

RELAY_DENIED = "554 5.7.1 relay access denied"
# RFC 5321 §3.6.1: a server MAY decline to act as a relay for source-routed addresses.
SOURCE_ROUTE_DENIED = "553 5.7.1 source routes are not accepted"


def split_address(address: str) -> tuple[str, str]:
    """``local@domain`` -> (local part, lower-cased domain without a trailing dot)."""
    local, _, domain = address.rpartition("@")
    return local, domain.lower().rstrip(".")


def is_source_route(path: str) -> bool:
    """True for an RFC 5321 §4.1.2 ``<@a,@b:user@c>`` path (aiosmtpd drops the route)."""
    return path.lstrip().startswith("<@")


def address_error(address: str, *, smtputf8: bool) -> str | None:
    """An address must be UTF-8, and may leave ASCII only in an SMTPUTF8
    transaction (RFC 6531 §3.2); None when it is fine."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:  # aiosmtpd keeps undecodable bytes as surrogates
        return "553 5.6.7 address is not valid UTF-8"
    if not smtputf8 and not address.isascii():
        return "553 5.6.7 non-ASCII address without SMTPUTF8 (RFC 6531 §3.2)"
    return None


def sender_verdict(config: RelayNodeConfig, address: str, login: object) -> str | None:
    """Postfix's reject_sender_login_mismatch: a logged-in user sends only as their
    own address or one of its declared aliases; None when ``address`` is fine. The
    null sender (RFC 5321 §4.5.5) belongs to no one, so anyone may use it."""
    if not isinstance(login, str) or not address or address == "<>":
        return None
    aliases = [
        a for user, mine in config.sender_aliases.items() if user.lower() == login for a in mine
    ]
    owned = {login, *(a.lower() for a in aliases)}
    if address.lower() in owned:
        return None
    return f"553 5.7.1 <{address}>: sender address rejected: not owned by user {login}"


def may_relay(config: RelayNodeConfig, *, authenticated: bool, client_ip: str) -> bool:
    """Mail for foreign domains is taken from logged-in users and trusted relays only."""
    return authenticated or client_ip in config.trusted_clients


def rcpt_verdict(
    config: RelayNodeConfig, address: str, *, authenticated: bool, client_ip: str
) -> str | None:
    """None when ``address`` is accepted, else the RCPT reply that refuses it."""
    local, domain = split_address(address)
    if not local or not domain:
        return "501 5.1.3 bad recipient address syntax"
    relay_ok = may_relay(config, authenticated=authenticated, client_ip=client_ip)
    # %-hack, bang path or a quoted "user@host" local part: a second routing layer
    # inside the local part, the classic open-relay trick (RFC 5321 §3.6.1).
    if not relay_ok and any(c in local for c in "@%!"):
        return f"{RELAY_DENIED} for <{address}>"
    final = config.local_domains.get(domain) or config.relay_domains.get(domain)
    if final is not None:
        if local.lower() in {u.lower() for u in final.users}:
            return None
        if srs_original(config.mailauth, address):  # a bounce to one of our SRS senders
            return None
        return f"550 5.1.1 <{address}>: recipient address rejected: user unknown"
    if relay_ok:
        return None
    return f"{RELAY_DENIED} for <{address}>"
