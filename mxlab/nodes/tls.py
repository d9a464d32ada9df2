"""Server-side TLS for every node that offers it (relay STARTTLS, store STARTTLS/STLS and
implicit TLS), with the node's certificate from the lab CA."""

from __future__ import annotations

import ssl

from mxlab.nodes.config import TlsFiles


def server_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """RFC 3207 / RFC 2595 / RFC 8314: one context, the lab CA's certificate for the node."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    return context
