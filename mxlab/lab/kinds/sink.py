"""An SMTP sink mxlab provides (like smtp-sink or Mailpit): our own node program
``python -m mxlab.nodes sink``, keeping every message it accepts for checks
(mxlab.nodes.sink.record, read through ``Lab.sink``)."""

from __future__ import annotations

from mxlab.lab.kinds.ours import OurKind

KIND = OurKind("sink")
