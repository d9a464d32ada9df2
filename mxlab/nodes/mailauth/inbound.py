"""The relay's one call into mail authentication, when a message is complete in hand
and before it is queued: sign what our users submit, check what others send, apply
the DMARC policy, forward with SRS and an ARC seal, add a footer where asked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiosmtpd.smtp import Session

from mxlab.nodes.config import MailAuth, RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.mailauth import forward, quarantine
from mxlab.nodes.relay.queue import Envelope
from mxlab.nodes.smtp_session import client_ip


async def on_receive(
    config: RelayNodeConfig, session: Session, env: Envelope, content: Callable[[], bytes]
) -> tuple[str | None, bytes | None]:
    """The SMTP refusal (DMARC p=reject), or None and the message to queue instead
    (``content()`` with the headers we add, the footer if any), None to keep it; ``env``
    gets the forwarded recipients. Nothing is read, imported or looked up when nothing
    applies."""
    auth = config.mailauth
    ip = client_ip(session)
    authenticated = bool(session.authenticated)
    domain = env.sender.rpartition("@")[2].lower()
    signs = authenticated and bool(auth.sign.get(domain))
    checks = auth.verify and not authenticated and ip not in auth.internal
    forwards = {a.lower() for a in auth.forwards}
    forwarding = any(
        r.address.lower() in forwards or forward.is_srs(auth, r.address) for r in env.recipients
    )
    if not (signs or checks or forwarding or auth.footer):
        return None, None
    helo = session.host_name or ""
    try:
        return await asyncio.to_thread(
            _process, config, env, content(), ip, helo, signs=signs, checks=checks
        )
    except Exception as exc:  # a library tripping on odd input: the client tries again
        emit(config.node, "error", error=f"mail authentication failed: {exc!r}")
        return "451 4.7.0 mail authentication failed here, try again later", None


def used_modules(auth: MailAuth) -> list[str]:
    """The modules ``on_receive`` imports at its first message under ``auth`` (about
    1.5 MiB: dkimpy, pyspf, authres, PyNaCl): a warm spawner imports them before it
    forks the relays, which then share them instead of each loading its own."""
    signs = bool(auth.sign) or auth.arc is not None
    wanted = {"mxlab.nodes.mailauth.verify": auth.verify, "mxlab.nodes.mailauth.sign": signs}
    return [module for module, used in wanted.items() if used]


def _process(
    config: RelayNodeConfig,
    env: Envelope,
    content: bytes,
    ip: str,
    helo: str,
    *,
    signs: bool,
    checks: bool,
) -> tuple[str | None, bytes]:
    auth = config.mailauth
    head = b""
    if checks:
        from mxlab.nodes.mailauth import verify

        verify.use_lab_dns(config.dns.host, config.dns.port)
        content = quarantine.strip(content, config.fqdn)
        verdict = verify.check(
            content, ip=ip, helo=helo, mail_from=env.sender, authserv_id=config.fqdn
        )
        if verdict.action == "reject":
            return verdict.reply, content
        head = verdict.header
        if verdict.action == "quarantine":
            head += quarantine.mark(f"dmarc=fail p=quarantine header.from={verdict.domain}")
    if auth.footer:
        content = forward.add_footer(content, auth.footer)
    if signs:
        from mxlab.nodes.mailauth import sign

        keys = auth.sign[env.sender.rpartition("@")[2].lower()]
        head = sign.dkim_headers(content, keys) + head
    if forward.expand(auth, env) and auth.arc is not None and checks:
        from mxlab.nodes.mailauth import sign

        head = sign.arc_headers(head + content, auth.arc, config.fqdn) + head
    return None, head + content
