"""mxlab_cert: a node's TLS certificate valid for long enough, renewed from the lab CA
when it is not."""

from __future__ import annotations

import time
from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import lab_module, run

DOCUMENTATION = r"""
module: mxlab_cert
short_description: A node's TLS certificate in a running mxlab lab, renewed when due
description:
  - Renews the node's certificate from the lab CA (and restarts the node to load it)
    when it expires within C(valid_for_days) - or has expired already - as a
    certificate rotation does; otherwise leaves it.
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  node:
    description: A relay or store node (the nodes serving TLS).
    type: str
    required: true
  valid_for_days:
    description: Renew when the certificate expires sooner than this many days from now.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Every relay's certificate good for another 30 days
  mxlab.lab.mxlab_cert:
    node: "{{ mxlab_node }}"
  delegate_to: localhost
"""

RETURN = r"""
valid_until:
  description: When the node's certificate expires after the task (a Unix timestamp).
  returned: always
  type: float
"""

DAY = 86400.0


def main() -> None:
    module = lab_module(
        {
            "node": {"type": "str", "required": True},
            "valid_for_days": {"type": "int", "default": 30},
        }
    )
    p = module.params

    def act(lab: Any) -> dict[str, Any]:
        until = lab.cert_valid_until(p["node"])
        changed = until < time.time() + p["valid_for_days"] * DAY
        if changed and not module.check_mode:
            lab.cert_renew(p["node"])
            until = lab.cert_valid_until(p["node"])
        before = {"valid_until": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))}
        after = {"valid_until": "renewed" if changed else before["valid_until"]}
        return {
            "changed": changed,
            "valid_until": until,
            "diff": {"before": before, "after": after},
        }

    run(module, act)


if __name__ == "__main__":
    main()
