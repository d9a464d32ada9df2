"""mxlab_dns_fault: a DNS failure staged in the running lab's DNS, present or absent."""

from __future__ import annotations

from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import lab_module, run

DOCUMENTATION = r"""
module: mxlab_dns_fault
short_description: A DNS fault on a name in a running mxlab lab
description:
  - Makes a name fail in the lab DNS (C(servfail); C(timeout), no answer; C(drop_mx), no
    MX records) or lifts the fault. The DNS node applies it on SIGHUP, without a restart.
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  name:
    description: The DNS name, e.g. C(beta.test).
    type: str
    required: true
  mode:
    description: How the name fails.
    type: str
    choices: [servfail, timeout, drop_mx]
    default: servfail
  state:
    description: Whether the fault is in force (C(absent) lifts every fault on the name).
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: beta.test has no MX records for a while
  mxlab.lab.mxlab_dns_fault:
    name: beta.test
    mode: drop_mx
"""

RETURN = r"""
faults:
  description: The faults in force after the task, by mode.
  returned: always
  type: dict
"""


def main() -> None:
    module = lab_module(
        {
            "name": {"type": "str", "required": True},
            "mode": {
                "type": "str",
                "choices": ["servfail", "timeout", "drop_mx"],
                "default": "servfail",
            },
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        }
    )
    p = module.params

    def act(lab: Any) -> dict[str, Any]:
        name = p["name"].strip().rstrip(".").lower() + "."  # as the DNS node compares names
        before = lab.dns_faults()
        if p["state"] == "present":
            changed = name not in before[p["mode"]]
            after = dict(before, **{p["mode"]: sorted({*before[p["mode"]], name})})
        else:
            after = {mode: [n for n in names if n != name] for mode, names in before.items()}
            changed = after != before
        if changed and not module.check_mode:
            if p["state"] == "present":
                lab.dns_fail(name, p["mode"])
            else:
                lab.dns_restore(name)
        return {"changed": changed, "faults": after, "diff": {"before": before, "after": after}}

    run(module, act)


if __name__ == "__main__":
    main()
