"""The MTA-STS policy host (RFC 8461 §3.3): https://mta-sts.<domain>/.well-known/mta-sts.txt
for the domains a relay serves, over TLS with its lab certificate (which names each
mta-sts.<domain>). A tiny HTTP/1.1 responder on h11: GET only, one request per
connection, 404 for anything else."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import h11

from mxlab.nodes.listen import quiet_on_stop
from mxlab.nodes.mailauth.sts_policy import PATH

MAX_REQUEST = 8192
TIMEOUT = 10.0


BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def respond(data: bytes, policies: dict[str, str]) -> bytes | None:
    """The whole response to the request bytes so far, or None while it is incomplete
    (sans-IO: the caller reads, this decides)."""
    if not data:
        return None  # (h11 takes b"" for the end of the stream)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return BAD_REQUEST
    if event is h11.NEED_DATA:
        return None
    if not isinstance(event, h11.Request):
        return BAD_REQUEST
    host = dict(event.headers).get(b"host", b"").decode("ascii", "replace")
    name = host.rsplit(":", 1)[0].lower()
    text = policies.get(name.removeprefix("mta-sts.")) if name.startswith("mta-sts.") else None
    if event.method != b"GET" or event.target != PATH.encode() or text is None:
        return _reply(conn, 404, b"not found\n")
    return _reply(conn, 200, text.encode())


def _reply(conn: h11.Connection, status: int, body: bytes) -> bytes:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    reason = b"OK" if status == 200 else b"Not Found"
    response = h11.Response(status_code=status, headers=headers, reason=reason)
    return conn.send(response) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


async def serve_policies(
    address: str, port: int, tls: ssl.SSLContext, policies: Callable[[], dict[str, str]]
) -> asyncio.Server:
    """Listen for policy requests; ``policies`` is read per request (a reload's are served)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            async with asyncio.timeout(TIMEOUT):
                while (out := respond(data, policies())) is None:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    data += chunk
            writer.write(out)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(quiet_on_stop(handle), address, port, ssl=tls)
