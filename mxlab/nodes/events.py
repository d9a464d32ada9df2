"""One JSON line per event on stdout: the runtimes collect it, `mxlab trace` reads it."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

# one encoder for every line: json.dumps with an argument builds a new one each call
_ENCODER = json.JSONEncoder(default=str)


def emit(node: str, event: str, **fields: Any) -> None:
    """Write one structured log line (ts, node, event, then the event's fields)."""
    line = {"ts": round(time.time(), 6), "node": node, "event": event, **fields}
    sys.stdout.write(_ENCODER.encode(line) + "\n")
    sys.stdout.flush()
