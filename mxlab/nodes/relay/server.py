"""The relay node: two aiosmtpd listeners (MX and submission) over one durable queue
and its delivery worker."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import warnings

import uvloop

from mxlab.nodes.config import RelayNodeConfig
from mxlab.nodes.events import emit
from mxlab.nodes.listen import listen
from mxlab.nodes.login_limits import LoginThrottle
from mxlab.nodes.relay.dedupe import DuplicateFilter
from mxlab.nodes.relay.delivery import Delivery
from mxlab.nodes.relay.esmtp import ConnectionBudget
from mxlab.nodes.relay.qmgr import DeliveryProcess
from mxlab.nodes.relay.queue import Queue
from mxlab.nodes.relay.queue_admin import take_over
from mxlab.nodes.relay.smtpd import RelayHandler, make_smtp
from mxlab.nodes.reload import on_sighup
from mxlab.nodes.tls import server_tls_context


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop ``mxlab.nodes`` runs the relay on: libuv's. A relay's CPU per message is
    spread thinly over asyncio's own machinery (loop turns, transports, futures), and
    uvloop takes 15-25% of it off (bench/smtp.py). The store and DNS nodes keep
    asyncio's loop, and the 2 MiB of RSS that uvloop would cost them."""
    return uvloop.new_event_loop()


async def serve(config: RelayNodeConfig) -> None:
    """Listen on the MX and submission ports and deliver the queue until cancelled."""
    # aiosmtpd warns on every connection when AUTH is allowed without TLS, which the
    # lab permits on purpose (allow_plaintext_auth); our events say what matters.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="aiosmtpd")
    loop = asyncio.get_running_loop()
    # an upstream retries for its queue lifetime, the lab-wide one
    duplicates = DuplicateFilter(config.state_path / "duplicates.log", ttl=config.queue.lifetime)
    queue = Queue(config.state_path / "queue", duplicates)
    delivery: Delivery | DeliveryProcess
    if config.queue.delivery_process:
        delivery = DeliveryProcess(config, queue)  # Postfix's qmgr beside its smtpd
    else:
        delivery = Delivery(config, queue)
    tls_context = server_tls_context(config.tls) if config.tls else None
    budget = ConnectionBudget(config.trusted_clients)
    throttle = LoginThrottle(config.login_limits)
    servers: list[asyncio.Server] = []
    handlers: list[RelayHandler] = []

    def reload(new: RelayNodeConfig) -> asyncio.Future[None] | None:
        """SIGHUP: users, domains and routes from the rewritten config; new sessions and
        the next delivery attempt use them (ports and TLS need a restart)."""
        nonlocal config
        config = new  # and listeners made after this signal
        for handler in handlers:
            handler.config = new
        return delivery.reload(new)

    on_sighup(config, reload)  # before any port answers: a HUP must never end the node
    lock = None
    if isinstance(delivery, DeliveryProcess):
        await delivery.resume()  # its delivery process takes the queue over
    else:
        lock = await take_over(delivery)
    worker = asyncio.create_task(delivery.run())
    try:
        listeners: list[tuple[int, bool, ssl.SSLContext | None]] = [
            (config.smtp_port, False, None),
            (config.submission_port, True, None),
        ]
        if tls_context is not None and config.submissions_port:  # RFC 8314 §3.3: implicit
            listeners.insert(0, (config.submissions_port, True, tls_context))  # TLS, bound first
        if tls_context is not None and config.mta_sts.policies:  # bound before SMTP greets
            from mxlab.nodes.mailauth.policy_server import serve_policies

            https = serve_policies(
                config.address, config.mta_sts.port, tls_context, lambda: config.mta_sts.policies
            )
            await listen(config, servers, config.mta_sts.port, https)
        for port, submission, implicit in listeners:
            handler = RelayHandler(
                config, queue, delivery, duplicates, throttle, submission=submission
            )
            handlers.append(handler)
            factory = make_smtp(config, handler, tls_context, budget).clone
            start = loop.create_server(factory, config.address, port, ssl=implicit)
            await listen(config, servers, port, start)
        emit(
            config.node,
            "listening",
            address=config.address,
            smtp=config.smtp_port,
            submission=config.submission_port,
        )
        await worker
    finally:
        worker.cancel()
        for server in servers:
            server.close()
        await asyncio.gather(worker, return_exceptions=True)
        queue.close()
        duplicates.close()
        if lock is not None:
            os.close(lock)
