"""Errors a user sees as one line (what is wrong, how to fix it), never a traceback."""

from __future__ import annotations

_PART_LIMIT = 240  # characters of a field, message or fix; they may echo the user's file


def printable(text: str, limit: int = _PART_LIMIT) -> str:
    """One printable line: control characters escaped, long echoes of the input cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LabError(Exception):
    """A failure the CLI prints as one line and exits non-zero on."""


class TopologyError(Exception):
    """A mistake in a topology or scenario file, as one line: ``file: field: what is
    wrong (fix)``. The CLI exits 2 on it, before anything is started or written."""

    def __init__(self, source: str, field: str, message: str, fix: str = "") -> None:
        field, message, fix = printable(field), printable(message), printable(fix)
        source = printable(source, 4096)
        self.source, self.field, self.message, self.fix = source, field, message, fix
        line = f"{source}: {field}: {message}" if field else f"{source}: {message}"
        super().__init__(f"{line} ({fix})" if fix else line)
