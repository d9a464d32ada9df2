"""COMPRESS=DEFLATE (RFC 4978): raw DEFLATE (RFC 1951, no zlib header) both ways once
the tagged OK has gone out; every output chunk ends with a sync flush (§4) so the
client can act on it. Sans-IO: bytes in, bytes out."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

INFLATE_STEP = 256 * 1024  # a small compressed input must not balloon at once


class Deflate:
    def __init__(self) -> None:
        self._out = zlib.compressobj(level=6, wbits=-15)
        self._in = zlib.decompressobj(wbits=-15)

    def inflate(self, data: bytes) -> Iterator[bytes]:
        """The client's bytes, decompressed a bounded piece at a time; a corrupt
        stream raises zlib.error."""
        while data:
            piece = self._in.decompress(data, INFLATE_STEP)
            data = self._in.unconsumed_tail
            if piece:
                yield piece

    def deflate(self, data: bytes) -> bytes:
        if not data:
            return b""
        return self._out.compress(data) + self._out.flush(zlib.Z_SYNC_FLUSH)
