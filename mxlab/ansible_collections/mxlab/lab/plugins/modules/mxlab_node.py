"""mxlab_node: a node of the running lab started, stopped, killed or restarted."""

from __future__ import annotations

from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import lab_module, run

DOCUMENTATION = r"""
module: mxlab_node
short_description: A node of a running mxlab lab started, stopped, killed or restarted
description:
  - C(started) and C(stopped) (SIGTERM) change a node only when it is not so already;
    C(killed) SIGKILLs a running node (what it acknowledged survives); C(restarted)
    always restarts it.
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  node:
    description: The node's name.
    type: str
    required: true
  state:
    description: What the node should be.
    type: str
    choices: [started, stopped, killed, restarted]
    default: started
"""

EXAMPLES = r"""
- name: Take the backup MX down
  mxlab.lab.mxlab_node:
    node: mx2-beta
    state: stopped
"""

RETURN = r"""
state:
  description: The node's runtime state before the task (running, stopped, exited...).
  returned: always
  type: str
"""


def main() -> None:
    module = lab_module(
        {
            "node": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "choices": ["started", "stopped", "killed", "restarted"],
                "default": "started",
            },
        }
    )
    p = module.params

    def act(lab: Any) -> dict[str, Any]:
        import mxlab

        node, want = p["node"], p["state"]
        if node not in lab.plan.nodes:
            nodes = ", ".join(lab.plan.nodes)
            raise mxlab.LabError(f"lab {lab.name} has no node {node!r} ({nodes})")
        state = next((s.state for s in lab.status() if s.node == node), "absent")
        running = state == "running"
        changed = want == "restarted" or running != (want == "started")
        if changed and not module.check_mode:
            action = {"started": lab.start, "stopped": lab.stop, "killed": lab.kill}
            action.get(want, lab.restart)(node)
        after = "running" if want in ("started", "restarted") else want
        diff = {"before": {"state": state}, "after": {"state": after if changed else state}}
        return {"changed": changed, "state": state, "diff": diff}

    run(module, act)


if __name__ == "__main__":
    main()
