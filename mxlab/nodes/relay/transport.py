"""Hand a message to the next hop with our pipelining client (mxlab.nodes.relay.client):
SMTP to an MX or smarthost, LMTP (RFC 2033) to the store. Returns one reply per
recipient; classifying them is the delivery worker's job."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from mxlab.nodes.delivery_id import QUEUE_ID_EXTENSION
from mxlab.nodes.relay.client import Client, Disconnected, ReplyError
from mxlab.nodes.relay.queue import MessageData
from mxlab.nodes.relay.routing import Hop
from mxlab.nodes.relay.sessions import SessionCache


@dataclass(frozen=True)
class DsnParams:
    """RFC 3461 parameters as they go on the wire: RET/ENVID, and NOTIFY/ORCPT by
    recipient."""

    mail: list[str] = field(default_factory=list)
    rcpt: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    reply: str  # "250 2.0.0 Ok", "451 4.4.1 connection refused", ...
    hop: str  # the host that gave it
    dsn_passed: bool = False  # the hop took our DSN requests on (RFC 3461 §6.2.1)
    lmtp: bool = False  # the hop was the final delivery agent

    @property
    def kind(self) -> str:
        """delivered, deferred or bounced, by the reply's first digit."""
        return {"2": "delivered", "5": "bounced"}.get(self.reply[:1], "deferred")


@dataclass(frozen=True)
class Transfer:
    """What one delivery attempt sends, whatever the hop."""

    sender: str
    content: MessageData
    mail_options: list[str]  # BODY=8BITMIME, SMTPUTF8: offered where the hop supports them
    dsn: DsnParams
    queue_id: str = ""  # told to a store that advertises XQUEUEID, for exactly once
    dot_lines: bool = True  # False: no line begins with a dot, so none needs stuffing


@dataclass(frozen=True)
class ClientIdentity:
    helo: str  # our FQDN, for EHLO/LHLO
    source: str  # our address: the next relay trusts that one, not 127.0.0.1
    tls: ssl.SSLContext | None  # for opportunistic STARTTLS (RFC 3207) where offered


def opportunistic_tls() -> ssl.SSLContext:
    """Encrypt, don't authenticate (RFC 7435), as MTAs do without DANE or MTA-STS.
    Built once: loading the system CA store costs ~65 ms of CPU per session."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def send(
    hops: list[Hop],
    rcpts: list[str],
    transfer: Transfer,
    me: ClientIdentity,
    cache: SessionCache,
    on_delivered: Callable[[dict[str, Outcome]], None],
) -> dict[str, Outcome]:
    """Try the hops in order: a connection failure or a 4xx moves the recipients it
    concerns to the next hop (RFC 5321 §5.1); a 2xx or 5xx is final. ``on_delivered``
    hears of each accepted recipient as its reply arrives, before QUIT."""
    outcomes: dict[str, Outcome] = {}
    pending = list(rcpts)
    for hop in hops:

        def confirmed(replies: dict[str, str], dsn_passed: bool, hop: Hop = hop) -> None:
            accepted = {
                r: Outcome(reply, hop.name, dsn_passed, hop.lmtp)
                for r, reply in replies.items()
                if reply.startswith("2")
            }
            if accepted:
                on_delivered(accepted)

        dsn_passed = False
        try:
            replies, dsn_passed = await _session(hop, pending, transfer, me, cache, confirmed)
        except ReplyError as exc:
            # a refused greeting or EHLO: the host is unusable, try the next one
            reply = f"451 4.4.1 {hop.name} refused the session: {exc.reply}"
            replies = dict.fromkeys(pending, reply)
        except UnicodeEncodeError:  # an SMTPUTF8 address, a hop without SMTPUTF8
            reply = f"553 5.6.7 {hop.name} does not support SMTPUTF8 (RFC 6531 §3.2)"
            replies = dict.fromkeys(pending, reply)
        except ValueError as exc:
            replies = dict.fromkeys(pending, f"553 5.1.3 {exc}")
        except (OSError, TimeoutError) as exc:
            reply = f"451 4.4.1 {hop.name}: {failure(exc)}"
            replies = dict.fromkeys(pending, reply)
        for rcpt, reply in replies.items():
            outcomes[rcpt] = Outcome(reply, hop.name, dsn_passed, hop.lmtp)
        pending = [r for r in pending if outcomes[r].kind == "deferred"]
        if not pending:
            break
    return outcomes


def failure(exc: OSError) -> str:
    """A connection's failure as the deferral says it, the same on any event loop: for
    a refused connect asyncio says "Connect call failed ('10.0.0.5', 25)", uvloop
    "Connection refused"; both become "[Errno 111] Connection refused"."""
    code = exc.errno or 0
    if code > 0 and not isinstance(exc, ssl.SSLError | socket.gaierror):  # theirs: no errno
        return f"{exc.__class__.__name__}: [Errno {code}] {os.strerror(code)}"
    return f"{exc.__class__.__name__}: {exc}"


async def _open(hop: Hop, me: ClientIdentity) -> Client:
    return await Client.open(
        hop.address,
        hop.port,
        helo=me.helo,
        source=me.source,
        lmtp=hop.lmtp,
        tls=None if hop.lmtp else me.tls,
    )


async def _session(
    hop: Hop,
    rcpts: list[str],
    transfer: Transfer,
    me: ClientIdentity,
    cache: SessionCache,
    confirmed: Callable[[dict[str, str], bool], None],
) -> tuple[dict[str, str], bool]:
    """One session, cached or new: per-recipient replies, and whether DSN requests
    went along; ``confirmed`` gets each transaction's replies as soon as they are in."""
    key = (hop.address, hop.port)
    client = cache.take(key)
    if client is not None:
        try:
            return await _on_session(client, hop, rcpts, transfer, cache, confirmed)
        except _StaleSession:
            pass  # the server dropped our idle session: nothing was sent, go anew
    try:
        return await _on_session(await _open(hop, me), hop, rcpts, transfer, cache, confirmed)
    except _StaleSession as exc:
        raise Disconnected(str(exc.__cause__)) from None


class _StaleSession(Exception):
    """The session broke before MAIL was answered: no message is at stake."""


async def _on_session(
    client: Client,
    hop: Hop,
    rcpts: list[str],
    transfer: Transfer,
    cache: SessionCache,
    confirmed: Callable[[dict[str, str], bool], None],
) -> tuple[dict[str, str], bool]:
    reusable = False
    try:
        options = [o for o in transfer.mail_options if client.supports(o.split("=")[0])]
        if client.supports("SIZE"):
            options.append(f"SIZE={len(transfer.content)}")  # RFC 1870 §6
        # RFC 3461 §6.2.1: pass the DSN requests on to a relay that supports them;
        # behind LMTP is final delivery, which we report ourselves
        dsn_passed = client.supports("DSN") and not hop.lmtp
        if dsn_passed:
            options += transfer.dsn.mail
        per_rcpt = transfer.dsn.rcpt if dsn_passed else {}
        if hop.lmtp and transfer.queue_id and client.supports(QUEUE_ID_EXTENSION):
            # the store records (queue id, recipient) with each copy it keeps, so a
            # copy sent again after we died before reading its 250 is not kept twice
            options.append(f"{QUEUE_ID_EXTENSION}={transfer.queue_id}")
        # LMTP: one recipient per transaction, so its per-recipient DATA replies
        # arrive one per transaction (RFC 2033 §4.2).
        batches = [[r] for r in rcpts] if hop.lmtp else [rcpts]
        replies: dict[str, str] = {}
        for n, batch in enumerate(batches):
            try:
                got = await _transaction(client, batch, transfer, options, per_rcpt)
            except _StaleSession as exc:
                if n == 0:
                    raise
                raise Disconnected(str(exc.__cause__)) from None
            confirmed(got, dsn_passed)
            replies |= got
        reusable = client.is_connected
        return replies, dsn_passed
    finally:
        if reusable:
            cache.give((hop.address, hop.port), client)
        else:
            await client.quit()


def _line(verb: bytes, path: str, encoding: str, options: list[str]) -> bytes:
    """A MAIL or RCPT command with the path as received (RFC 5321 §4.1.2), not
    re-parsed: a quoted local part travels unchanged. CR or LF in it cannot be sent."""
    arg = path.encode(encoding)
    if b"\r" in arg or b"\n" in arg:  # would smuggle a command to the next hop
        raise ValueError(f"CR or LF in the path <{path!r}>")
    params = b"".join(b" " + o.encode("ascii") for o in options)
    return verb + b":<" + arg + b">" + params + b"\r\n"


async def _transaction(
    client: Client,
    rcpts: list[str],
    transfer: Transfer,
    options: list[str],
    rcpt_options: dict[str, list[str]],
) -> dict[str, str]:
    """MAIL, RCPT per recipient, DATA (RFC 5321 §3.3), pipelined where the server
    offers PIPELINING (RFC 2920 §3.1: the commands go in one write, the replies are
    read in order); RSET after a failure."""
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    mail = _line(b"MAIL FROM", transfer.sender, encoding, options)
    rcpt_lines = [_line(b"RCPT TO", r, encoding, rcpt_options.get(r, [])) for r in rcpts]
    pipelined = client.supports("PIPELINING")
    if pipelined:
        client.writer.write(b"".join([mail, *rcpt_lines, b"DATA\r\n"]))
    else:
        client.writer.write(mail)
    try:
        reply = await client.reply()
    except (Disconnected, ConnectionError) as exc:
        raise _StaleSession from exc  # dropped before any data: safe to try again
    if not reply.startswith("2"):
        if pipelined:  # the RCPTs and DATA are answered too (503), in order
            for _ in range(len(rcpts) + 1):
                await client.reply()
        await client.command(b"RSET\r\n")
        return dict.fromkeys(rcpts, reply)
    replies: dict[str, str] = {}
    accepted: list[str] = []
    for rcpt, line in zip(rcpts, rcpt_lines, strict=True):
        reply = await (client.reply() if pipelined else client.command(line))
        if reply.startswith("2"):
            accepted.append(rcpt)
        else:
            replies[rcpt] = reply
    if not pipelined and not accepted:
        await client.command(b"RSET\r\n")
        return replies
    go = await (client.reply() if pipelined else client.command(b"DATA\r\n"))
    if go.startswith("3") and not accepted:
        # RFC 2920 §3.1: a server may take DATA with no recipient; end it empty
        await client.command(b".\r\n")
        go = "554 5.5.1 no valid recipients"
    if not go.startswith("3"):
        if accepted:
            replies |= dict.fromkeys(accepted, go)
        await client.command(b"RSET\r\n")
        return replies
    await client.send_data(transfer.content.blocks(), stuffing=transfer.dot_lines)
    for rcpt in accepted if client.lmtp else accepted[:1]:
        replies[rcpt] = await client.reply()
    if not client.lmtp:
        replies |= dict.fromkeys(accepted, replies[accepted[0]])
    if not replies[accepted[0]].startswith("2"):
        await client.command(b"RSET\r\n")
    return replies
