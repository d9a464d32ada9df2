"""Errors a user sees as one line (what is wrong, how to fix it), never a traceback."""


class LabError(Exception):
    """A failure the CLI prints as one line and exits non-zero on."""
