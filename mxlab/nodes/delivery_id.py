"""How a relay names, to the store, the queue entry a copy comes from: a private LMTP
extension, advertised in the store's LHLO reply and used as a MAIL parameter,
``MAIL FROM:<a@b> XQUEUEID=<queue id>`` (RFC 5321 §4.1.2 esmtp-param, RFC 2033 §4.1).

Why a parameter and not a trace header: aiosmtpd's LMTP class lets a subclass take
the parameter off the MAIL line before its own check (the relay does the same with
RFC 3461's), the stored bytes stay exactly as sent, and it is only sent where the
store says it understands it, so an LMTP server that does not (Dovecot) never sees
an unknown parameter. A header would be parsed out of every message and would be
missing from the DSNs the relay writes itself.
"""

from __future__ import annotations

import re

QUEUE_ID_EXTENSION = "XQUEUEID"
_PARAM = re.compile(rf"[ \t]+{QUEUE_ID_EXTENSION}=(\S*)", re.I)
_VALUE = re.compile(r"[A-Za-z0-9]{1,64}\Z")


def take_queue_id(arg: str) -> tuple[str, str] | None:
    """Split the XQUEUEID parameter off a MAIL argument: (the rest, the id or "");
    None when it is present but malformed."""
    found = _PARAM.findall(arg)
    if not found:
        return arg, ""
    if len(found) > 1 or not _VALUE.match(found[0]):
        return None
    return _PARAM.sub("", arg), found[0]
