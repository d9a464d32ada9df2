"""The dashboard's ASGI app: a JSON API over one ``mxlab.Lab``, a server-sent event
stream of its state and its nodes' log events, and the static page that shows them.

Every /api request carries the token printed with the URL (query ``token``): the
dashboard can stop nodes and send mail as any lab user, so another local user who
finds the port must not drive it."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

import mxlab
from mxlab.lab import graph as drawing
from mxlab.lab import kinds

STATIC = Path(__file__).parent / "static"
NODE_ACTIONS = ("start", "stop", "kill", "restart", "cut", "restore")
TICK = 1.0  # seconds between two looks at the lab for the event stream


class _Token:
    """Pure ASGI (a streaming response passes through untouched): /api/* needs the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            given = parse_qs(scope["query_string"].decode()).get("token", [""])[0]
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                denied = JSONResponse({"error": "missing or wrong token"}, status_code=403)
                await denied(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=400)


class Dashboard:
    """The handlers, over one lab. Blocking API calls run in worker threads."""

    def __init__(self, lab: mxlab.Lab) -> None:
        self.lab = lab
        self.offsets: dict[str, int] = {}

    # -- what the page reads ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        lab = self.lab
        queues: dict[str, list[dict[str, Any]]] = {
            n.name: [] for n in lab.plan.nodes.values() if n.role == "relay"
        }
        for entry in lab.queue():
            queues[str(entry["node"])].append(entry)
        nodes = [
            {"node": s.node, "role": s.role, "address": s.address, "state": s.state,
             "fqdn": lab.plan.nodes[s.node].fqdn}
            for s in lab.status()
        ]  # fmt: skip
        return {
            "lab": lab.name,
            "runtime": lab.plan.runtime,
            "nodes": nodes,
            "queues": queues,
            "users": [u.address for u in lab.users],
        }

    def new_events(self) -> list[dict[str, Any]]:
        """Log lines the nodes wrote since the last look, oldest first."""
        found: list[dict[str, Any]] = []
        for node in self.lab.plan.nodes:
            try:
                data = self.lab.log(node)
            except mxlab.LabError:
                continue
            start = self.offsets.get(node, 0)
            if len(data) < start:  # the log was replaced (node recreated)
                start = 0
            end = data.rfind(b"\n") + 1
            if end <= start:
                continue
            self.offsets[node] = end
            plan = self.lab.plan.nodes[node]  # each kind reads its own log (Postfix's...)
            found += kinds.get(plan.kind).events(plan, data[start:end])
        return sorted(found, key=lambda line: line.get("ts", 0))

    async def state(self, request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(self.snapshot))

    async def graph_svg(self, request: Request) -> Response:
        g = await asyncio.to_thread(self.lab.graph)
        return Response(drawing.svg(g), media_type="image/svg+xml")

    async def zones(self, request: Request) -> Response:
        """Read afresh: `mxlab dns add/remove` in another process changes the plan."""
        lab = await asyncio.to_thread(mxlab.Lab.attach, self.lab.name)
        return Response(lab.zones(), media_type="text/plain")

    async def mailbox(self, request: Request) -> Response:
        address = request.query_params.get("address", "")
        try:
            msgs = await asyncio.to_thread(lambda: self.lab.mailbox(address).messages())
        except (mxlab.LabError, OSError) as exc:
            return _error(exc)
        rows = [
            {"subject": str(m["Subject"] or ""), "from": str(m["From"] or ""),
             "date": str(m["Date"] or ""), "message_id": str(m["Message-ID"] or "")}
            for m in msgs
        ]  # fmt: skip
        return JSONResponse({"address": address, "messages": rows})

    async def trace(self, request: Request) -> Response:
        """The message's hops as a timeline: each event with its delay from the one
        before, the node, the SMTP reply and the DNS answers the relay logged."""
        message_id = request.query_params.get("message_id", "")
        events = await asyncio.to_thread(self.lab.trace, message_id)
        rows, before = [], None
        for e in events:
            rows.append(
                {"ts": e.ts, "delay": None if before is None else round(e.ts - before, 3),
                 "node": e.node, "event": e.event, "fields": e.fields}
            )  # fmt: skip
            before = e.ts
        return JSONResponse({"message_id": message_id, "events": rows})

    # -- what the page does ----------------------------------------------------------
    async def node_action(self, request: Request) -> Response:
        node, action = request.path_params["node"], request.path_params["action"]
        if action not in NODE_ACTIONS:
            return _error(ValueError(f"unknown action {action!r}"))
        try:
            await asyncio.to_thread(getattr(self.lab, action), node)
        except mxlab.LabError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "node": node, "action": action})

    async def dns_fault(self, request: Request) -> Response:
        form = await request.json()
        try:
            if request.path_params["action"] == "fail":
                await asyncio.to_thread(
                    self.lab.dns_fail, form.get("name", ""), form.get("mode", "servfail")
                )
                return JSONResponse({"ok": True})
            left = await asyncio.to_thread(self.lab.dns_restore, form.get("name") or None)
        except mxlab.LabError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "still_failing": left})

    async def flush(self, request: Request) -> Response:
        node = request.path_params["node"]
        try:
            await asyncio.to_thread(self.lab.queue_action, "flush", None, node)
        except mxlab.LabError as exc:
            return _error(exc)
        return JSONResponse({"ok": True})

    async def send(self, request: Request) -> Response:
        form = await request.json()
        to = [a.strip() for a in str(form.get("to", "")).split(",") if a.strip()]
        try:
            sent = await asyncio.to_thread(
                self.lab.send,
                str(form.get("from", "")),
                to,
                str(form.get("subject") or "sent from the dashboard"),
                str(form.get("body") or "Hello from the mxlab dashboard.\n"),
            )
        except mxlab.LabError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "message_id": sent.message_id, "to": to})

    # -- live ------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        """Server-sent events: ``state`` when a node or queue changes, ``log`` for each
        new node log event (RFC: the WHATWG EventSource format)."""

        async def stream() -> AsyncIterator[str]:
            last = ""
            await asyncio.to_thread(self.new_events)  # start from now, not the whole log
            while not await request.is_disconnected():
                snap = json.dumps(await asyncio.to_thread(self.snapshot), default=str)
                if snap != last:
                    last = snap
                    yield f"event: state\ndata: {snap}\n\n"
                for line in await asyncio.to_thread(self.new_events):
                    yield f"event: log\ndata: {json.dumps(line, default=str)}\n\n"
                yield ": tick\n\n"  # a comment: lets a closed connection be noticed
                await asyncio.sleep(TICK)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")


def make_app(lab: mxlab.Lab, token: str) -> Starlette:
    """The dashboard for ``lab``; /api/* answers only requests with ``token``."""
    d = Dashboard(lab)
    routes = [
        Route("/", d.index),
        Route("/api/state", d.state),
        Route("/api/graph.svg", d.graph_svg),
        Route("/api/zones", d.zones),
        Route("/api/mailbox", d.mailbox),
        Route("/api/trace", d.trace),
        Route("/api/events", d.events),
        Route("/api/send", d.send, methods=["POST"]),
        Route("/api/node/{node}/{action}", d.node_action, methods=["POST"]),
        Route("/api/queue/{node}/flush", d.flush, methods=["POST"]),
        Route("/api/dns/{action:str}", d.dns_fault, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Token, token=token)])
