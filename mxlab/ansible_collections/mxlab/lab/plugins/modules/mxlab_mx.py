"""mxlab_mx: a domain's MX hosts and their preferences in the running lab."""

from __future__ import annotations

from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import converge, lab_module, run

DOCUMENTATION = r"""
module: mxlab_mx
short_description: The MX set of a domain of a running mxlab lab
description:
  - Sets a domain's MX hosts as a whole (C(mx)), or one host's entry (C(node) with
    C(preference) and C(state)).
  - The lab DNS serves the new MX records; relays reload their routing (final for a
    domain where they are the best MX, backup where they are listed lower).
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  domain:
    description: A domain of the lab.
    type: str
    required: true
  mx:
    description: The whole MX set, relay node -> preference.
    type: dict
  node:
    description: One relay node, with C(preference) and C(state).
    type: str
  preference:
    description: The node's MX preference.
    type: int
    default: 10
  state:
    description: Whether C(node) is an MX host of the domain.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: mx-alpha becomes beta.test's backup MX
  mxlab.lab.mxlab_mx:
    domain: beta.test
    node: mx-alpha
    preference: 20
"""

RETURN = r"""
mx:
  description: The domain's MX set after the change (node -> preference).
  returned: always
  type: dict
nodes:
  description: The nodes whose config changed.
  returned: always
  type: list
  elements: str
"""


def main() -> None:
    module = lab_module(
        {
            "domain": {"type": "str", "required": True},
            "mx": {"type": "dict"},
            "node": {"type": "str"},
            "preference": {"type": "int", "default": 10},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        required_one_of=[("mx", "node")],
        mutually_exclusive=[("mx", "node")],
    )
    p = module.params
    domain = p["domain"].lower()

    def act(lab: Any) -> dict[str, Any]:
        from mxlab.lab import live

        def wanted(current: dict[str, int]) -> dict[str, int]:
            if p["mx"] is not None:
                return {node: int(pref) for node, pref in p["mx"].items()}
            if p["state"] == "present":
                return current | {p["node"]: p["preference"]}
            return {n: pref for n, pref in current.items() if n != p["node"]}

        result = converge(
            module,
            lab,
            lambda t: live.with_mx(t, domain, wanted(live.mx_of(t, domain))),
            lambda t: live.mx_of(t, domain),
        )
        return result | {"mx": result["diff"]["after"]}

    run(module, act)


if __name__ == "__main__":
    main()
