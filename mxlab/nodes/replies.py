"""Enhanced status codes (RFC 2034, RFC 3463) on the replies aiosmtpd sends without
one, for the relay's SMTP and the store's LMTP alike (RFC 2033 §5 requires them)."""

from __future__ import annotations

import re

# RFC 3463 codes for the replies aiosmtpd itself sends without one
_DEFAULT_ENHANCED = {
    "221": "2.0.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")


def with_enhanced_code(reply: str) -> str:
    """RFC 2034 §3: every reply but the greeting and HELO/EHLO carries a status code."""
    code = reply[:3]
    if _HAS_ENHANCED.match(reply) or code not in _DEFAULT_ENHANCED:
        return reply
    return f"{reply[:4]}{_DEFAULT_ENHANCED[code]} {reply[4:]}".rstrip()
