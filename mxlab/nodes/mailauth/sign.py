"""DKIM signatures (RFC 6376, RFC 8463 Ed25519) and ARC sets (RFC 8617) with dkimpy."""

from __future__ import annotations

import functools
from pathlib import Path

import dkim

from mxlab.nodes.config import DkimKey

_CANON = (b"relaxed", b"relaxed")  # RFC 6376 §3.4: survives header refolding


@functools.cache
def _private(path: str) -> bytes:
    return Path(path).read_bytes()


def dkim_headers(message: bytes, keys: list[DkimKey]) -> bytes:
    """One DKIM-Signature per key (RSA beside Ed25519, RFC 8463 §5's dual signing), to
    prepend to ``message``."""
    out = b""
    for key in keys:
        out = (
            dkim.sign(
                message,
                key.selector.encode(),
                key.domain.encode(),
                _private(key.key),
                signature_algorithm=key.algorithm.encode(),
                canonicalize=_CANON,
                linesep=b"\r\n",
            )
            + out
        )
    return out


def arc_headers(message: bytes, key: DkimKey, authserv_id: str) -> bytes:
    """The next ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results)
    over ``message``, which carries our Authentication-Results (RFC 8617 §5.1)."""
    lines = dkim.arc_sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        _private(key.key),
        authserv_id.encode(),
    )
    return b"".join(line.rstrip(b"\r\n") + b"\r\n" for line in lines)
