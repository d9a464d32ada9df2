"""The ESMTP extensions aiosmtpd lacks, added on its SMTP class rather than by
rewriting SMTP: enhanced status codes on its own replies (RFC 2034), CHUNKING/BDAT
(RFC 3030), DSN parameters (RFC 3461), and refusing source routes."""

from __future__ import annotations

import re

from aiosmtpd.smtp import SMTP, Envelope, syntax

from mxlab.nodes.relay.policy import SOURCE_ROUTE_DENIED, is_source_route

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
_DSN_PARAM = re.compile(r"[ \t]+(RET|ENVID|NOTIFY|ORCPT)=(\S*)", re.I)
_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}
_DISCARD_PIECE = 1 << 16


def with_enhanced_code(reply: str) -> str:
    """RFC 2034 §3: every reply but the greeting and HELO/EHLO carries a status code."""
    code = reply[:3]
    if _HAS_ENHANCED.match(reply) or code not in _DEFAULT_ENHANCED:
        return reply
    return f"{reply[:4]}{_DEFAULT_ENHANCED[code]} {reply[4:]}".rstrip()


def take_dsn_params(arg: str, names: set[str]) -> tuple[str, dict[str, str]] | str:
    """Split RFC 3461 parameters off a MAIL/RCPT argument (aiosmtpd would refuse them
    and upper-case their values); a str result is the syntax error reply."""
    found: dict[str, str] = {}
    errors: list[str] = []

    def grab(m: re.Match[str]) -> str:
        name, value = m.group(1).upper(), m.group(2)
        if name not in names:
            return m.group(0)
        if name in found or not value:
            errors.append(name)
        found[name] = value
        return ""

    rest = _DSN_PARAM.sub(grab, arg)
    notify = set(found.get("NOTIFY", "FAILURE").upper().split(","))
    if (
        errors
        or found.get("RET", "FULL").upper() not in ("FULL", "HDRS")
        or not (notify == {"NEVER"} or notify <= _NOTIFY)
        or ";" not in found.get("ORCPT", ";")
    ):
        return "501 5.5.4 bad DSN parameter (RFC 3461)"
    return rest, found


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope plus what the extensions collect during a transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn_mail: dict[str, str] = {}  # RET, ENVID
        self.dsn_rcpt: dict[str, dict[str, str]] = {}  # address -> NOTIFY, ORCPT
        self.chunks: list[bytes] = []
        self.chunked_bytes = 0
        self.chunk_error = ""  # set once a chunk failed: the rest is read and dropped


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with the extensions above; the handler hooks stay the place
    where policy and queueing live."""

    _greeting_reply = False  # HELO/EHLO replies keep their plain form (RFC 2034 §3)
    envelope: RelayEnvelope
    pending_dsn: dict[str, str] = {}  # DSN parameters of the command being handled

    def _create_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and not self._greeting_reply:
            status = with_enhanced_code(status)
        await super().push(status)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._greeting_reply = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._greeting_reply = False

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._greeting_reply = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._greeting_reply = False

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        taken = take_dsn_params(arg or "", {"RET", "ENVID"})
        if isinstance(taken, str):
            await self.push(taken)
            return
        arg, self.pending_dsn = taken
        await super().smtp_MAIL(arg or None)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if is_source_route((arg or "").partition(":")[2]):  # aiosmtpd drops the route
            await self.push(SOURCE_ROUTE_DENIED)
            return
        taken = take_dsn_params(arg or "", {"NOTIFY", "ORCPT"})
        if isinstance(taken, str):
            await self.push(taken)
            return
        arg, self.pending_dsn = taken
        await super().smtp_RCPT(arg or None)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if self.envelope.chunks or self.envelope.chunk_error:
            await self.push("503 5.5.1 DATA after BDAT in one transaction (RFC 3030 §2)")
            return
        await super().smtp_DATA(arg)

    @syntax("BDAT chunk-size [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030: the chunk is read whatever the verdict, so the stream stays in
        step; the message goes to the same DATA hook once LAST arrives."""
        parts = (arg or "").split()
        if not (0 < len(parts) <= 2 and parts[0].isdigit()) or (
            len(parts) == 2 and parts[1].upper() != "LAST"
        ):
            await self.push("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        env = self.envelope
        limit = self.data_size_limit
        if limit and env.rcpt_tos and env.chunked_bytes + size > limit:
            env.chunk_error = "552 5.3.4 message size exceeds fixed maximum message size"
        # no recipients also covers no HELO and no AUTH: RCPT needs both first
        error = "503 5.5.1 Error: need RCPT command" if not env.rcpt_tos else env.chunk_error
        if error:
            await self._discard(size)
            await self.push(error)
            if last and env.rcpt_tos:  # the failed transaction ends here
                self._set_post_data_state()
            return
        env.chunks.append(await self._reader.readexactly(size))
        env.chunked_bytes += size
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        env.content = env.original_content = b"".join(env.chunks)
        env.chunks = []
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def _discard(self, size: int) -> None:
        while size > 0:
            size -= len(await self._reader.readexactly(min(size, _DISCARD_PIECE)))
