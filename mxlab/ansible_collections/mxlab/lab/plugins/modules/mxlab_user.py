"""mxlab_user: a lab user present (with a password) or absent, in the running lab."""

from __future__ import annotations

from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import HIDDEN, lab_module, run

DOCUMENTATION = r"""
module: mxlab_user
short_description: A user of a running mxlab lab, present or absent
description:
  - Adds a user to one of the lab's domains, changes its password, or removes it.
  - The lab's store and submission relay reload their config (SIGHUP); nothing restarts.
  - Runs on the control node (C(hosts=localhost)) through the mxlab Python API.
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  address:
    description: The user's address, C(local@domain) of a domain of the lab.
    type: str
    required: true
  password:
    description: The password (required to add a user).
    type: str
  state:
    description: Whether the user exists.
    type: str
    choices: [present, absent]
    default: present
  update_password:
    description: C(always) sets the password of an existing user; C(on_create) only when adding.
    type: str
    choices: [always, on_create]
    default: always
"""

EXAMPLES = r"""
- name: Erin gets a mailbox at alpha.test
  mxlab.lab.mxlab_user:
    address: erin@alpha.test
    password: "{{ erin_password }}"
"""

RETURN = r"""
nodes:
  description: The nodes whose config changed (and that reloaded it).
  returned: always
  type: list
  elements: str
"""


def main() -> None:
    module = lab_module(
        {
            "address": {"type": "str", "required": True},
            "password": {"type": "str", "no_log": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "update_password": {
                "type": "str",
                "choices": ["always", "on_create"],
                "default": "always",
            },
        },
        required_if=[("state", "present", ["password"])],
    )
    p = module.params

    def act(lab: Any) -> dict[str, Any]:
        address, dry = p["address"], module.check_mode
        known = {u.address.lower(): u for u in lab.users}.get(address.lower())
        before: dict[str, Any] = {"address": address, "state": "present" if known else "absent"}
        if known:
            before["password"] = HIDDEN
        after = dict(before, state=p["state"])
        nodes: list[str] = []
        if p["state"] == "absent":
            after.pop("password", None)
            if known:
                nodes = lab.remove_user(address, dry_run=dry)
        elif not known:
            nodes = lab.add_user(address, p["password"], dry_run=dry)
            after["password"] = HIDDEN
        elif p["update_password"] == "always" and known.password != p["password"]:
            nodes = lab.set_password(address, p["password"], dry_run=dry)
            after["password"] = f"{HIDDEN} (changed)"
        return {"changed": bool(nodes), "nodes": nodes, "diff": {"before": before, "after": after}}

    run(module, act)


if __name__ == "__main__":
    main()
