"""mxlab: a containerised mail cluster as a lab."""

__version__ = "0.1.0"
