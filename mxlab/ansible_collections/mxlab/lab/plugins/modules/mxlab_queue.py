"""mxlab_queue: a relay's queue drained - flushed, and waited for until it is empty."""

from __future__ import annotations

import time
from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import lab_module, run

DOCUMENTATION = r"""
module: mxlab_queue
short_description: A relay of a running mxlab lab with an empty queue
description:
  - Asks the relay to deliver what waits for a retry now, then waits until its queue is
    empty (or fails after C(timeout) seconds, naming what is left). A relay being taken
    out of service is drained this way after it stopped being an MX host.
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  node:
    description: The relay node.
    type: str
    required: true
  timeout:
    description: Seconds to wait for the queue to empty.
    type: float
    default: 60
"""

EXAMPLES = r"""
- name: Drain mx2-beta
  mxlab.lab.mxlab_queue:
    node: mx2-beta
"""

RETURN = r"""
drained:
  description: How many queued messages the relay had when the task began.
  returned: always
  type: int
"""

POLL = 0.2


def main() -> None:
    module = lab_module(
        {"node": {"type": "str", "required": True}, "timeout": {"type": "float", "default": 60}}
    )
    p = module.params

    def act(lab: Any) -> dict[str, Any]:
        node = p["node"]
        queued = {entry["id"] for entry in lab.queue(node)}
        if queued and not module.check_mode:
            lab.queue_action("flush", node=node)
            deadline = time.monotonic() + p["timeout"]
            while left := lab.queue(node):
                if time.monotonic() > deadline:
                    module.fail_json(msg=f"{node} still holds {len(left)} messages", queue=left)
                time.sleep(POLL)
        diff = {"before": {"queued": len(queued)}, "after": {"queued": 0}}
        return {"changed": bool(queued), "drained": len(queued), "diff": diff}

    run(module, act)


if __name__ == "__main__":
    main()
