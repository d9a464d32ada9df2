"""What a forwarder does to a message it passes on: the new recipients, an SRS sender
on the wire (so SPF at the next hop checks the forwarder's domain), and a footer where
a lesson wants DKIM broken."""

from __future__ import annotations

import functools

from mxlab.nodes.config import MailAuth
from mxlab.nodes.relay.queue import Envelope, Recipient


def expand(auth: MailAuth, env: Envelope) -> bool:
    """Replace forwarded recipients by their targets (RFC 3461 §4.2 ORCPT keeps the
    original), and our SRS addresses by the senders they stand for (a bounce coming
    back); whether any was forwarded."""
    table = {a.lower(): targets for a, targets in auth.forwards.items()}
    out: list[Recipient] = []
    forwarded = False
    for rcpt in env.recipients:
        targets = table.get(rcpt.address.lower())
        if targets is None and is_srs(auth, rcpt.address):
            original = srs_original(auth, rcpt.address)
            targets = [original] if original else None
        if targets is None:
            out.append(rcpt)
            continue
        forwarded = True
        orcpt = rcpt.orcpt or f"rfc822;{rcpt.address}"
        out += [Recipient(address=t, notify=rcpt.notify, orcpt=orcpt) for t in targets]
    env.recipients = out
    return forwarded


def outbound_sender(auth: MailAuth, env: Envelope, rcpts: list[Recipient], *, local: bool) -> str:
    """The reverse-path on the wire, for the send path: an SRS0 address of our domain
    when we forward to another domain's host, so SPF there checks us. The queue keeps
    the original sender, so our own bounces of forwarded mail reach the real one."""
    if local or auth.srs_secret is None or not env.sender:
        return env.sender
    forwards = {a.lower() for a in auth.forwards}
    if not any(r.orcpt.partition(";")[2].lower() in forwards for r in rcpts):
        return env.sender
    import srslib

    return str(srslib.SRS(_secret(auth.srs_secret)).forward(env.sender, auth.srs_domain))


def is_srs(auth: MailAuth, address: str) -> bool:
    """An address of the shape of our SRS senders (checked no further: cheap)."""
    local, _, domain = address.rpartition("@")
    return (
        auth.srs_secret is not None
        and domain.lower() == auth.srs_domain
        and local.upper().startswith(("SRS0=", "SRS1="))
    )


def srs_original(auth: MailAuth, address: str) -> str | None:
    """The sender one of our SRS addresses stands for, if its hash and age hold."""
    if auth.srs_secret is None or not is_srs(auth, address):
        return None
    import srslib

    try:
        return str(srslib.SRS(_secret(auth.srs_secret)).reverse(address))
    except srslib.Error:
        return None


@functools.cache
def _secret(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def add_footer(message: bytes, footer: str) -> bytes:
    """Append ``footer`` to the body, as a mailing list does."""
    text = footer.replace("\r\n", "\n").rstrip("\n").replace("\n", "\r\n") + "\r\n"
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + text.encode("utf-8")
