"""What a forwarder does to a message it passes on: the new recipients, an SRS sender
(so SPF at the next hop checks the forwarder's domain), and a footer where a lesson
wants DKIM broken."""

from __future__ import annotations

from mxlab.nodes.config import MailAuth
from mxlab.nodes.relay.queue import Envelope, Recipient


def expand(auth: MailAuth, env: Envelope) -> bool:
    """Replace forwarded recipients by their targets (RFC 3461 §4.2 ORCPT keeps the
    original); whether any was forwarded."""
    table = {a.lower(): targets for a, targets in auth.forwards.items()}
    out: list[Recipient] = []
    forwarded = False
    for rcpt in env.recipients:
        targets = table.get(rcpt.address.lower())
        if targets is None:
            out.append(rcpt)
            continue
        forwarded = True
        orcpt = rcpt.orcpt or f"rfc822;{rcpt.address}"
        out += [Recipient(address=t, notify=rcpt.notify, orcpt=orcpt) for t in targets]
    env.recipients = out
    return forwarded


def srs_sender(sender: str, secret_file: str, domain: str) -> str:
    """The SRS0 address of ``sender`` under ``domain`` (the null sender stays null)."""
    import srslib

    if not sender:
        return sender
    with open(secret_file) as f:
        secret = f.read().strip()
    return str(srslib.SRS(secret).forward(sender, domain))


def add_footer(message: bytes, footer: str) -> bytes:
    """Append ``footer`` to the body, as a mailing list does."""
    text = footer.replace("\r\n", "\n").rstrip("\n").replace("\n", "\r\n") + "\r\n"
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + text.encode("utf-8")
