"""mxlab_domain: a mail domain of the running lab, served by nodes it already has."""

from __future__ import annotations

from typing import Any

from ansible_collections.mxlab.lab.plugins.module_utils.lab import (
    converge,
    domain_view,
    lab_module,
    run,
)

DOCUMENTATION = r"""
module: mxlab_domain
short_description: A domain of a running mxlab lab, served by its existing nodes
description:
  - Adds a domain (or brings an existing one to the given store, MX set, submission
    relay and users) while the lab runs - its zone and MX records in the lab DNS,
    the relays' routing (final or backup MX), the store's users.
  - Relays and stores reload their config (SIGHUP); the DNS node restarts with the new
    zones. Removing a domain is not supported (bring the lab down and up instead).
options:
  lab:
    description: The lab's name; the only running lab when omitted.
    type: str
  domain:
    description: The domain, e.g. C(gamma.test).
    type: str
    required: true
  store:
    description: The store node keeping its mail.
    type: str
    required: true
  mx:
    description: Relay node -> MX preference (lowest is the primary).
    type: dict
    required: true
  users:
    description: Local part -> password; at least one.
    type: dict
    required: true
  submission:
    description: The relay taking its users' outgoing mail; the primary MX when omitted.
    type: str
"""

EXAMPLES = r"""
- name: gamma.test, kept on store-beta, mx-beta primary and mx-alpha backup
  mxlab.lab.mxlab_domain:
    domain: gamma.test
    store: store-beta
    mx: {mx-beta: 10, mx-alpha: 20}
    users: {gus: "{{ gus_password }}"}
"""

RETURN = r"""
nodes:
  description: The nodes whose config changed (relays, store, and the DNS node).
  returned: always
  type: list
  elements: str
"""


def main() -> None:
    module = lab_module(
        {
            "domain": {"type": "str", "required": True},
            "store": {"type": "str", "required": True},
            "mx": {"type": "dict", "required": True},
            "users": {"type": "dict", "required": True, "no_log": True},
            "submission": {"type": "str"},
        }
    )
    p = module.params
    domain = p["domain"].lower()

    def act(lab: Any) -> dict[str, Any]:
        from mxlab.lab import live

        mx = {node: int(pref) for node, pref in p["mx"].items()}
        users = {local: str(pw) for local, pw in p["users"].items()}
        return converge(
            module,
            lab,
            lambda t: live.with_domain(t, domain, p["store"], mx, users, p["submission"]),
            lambda t: domain_view(t, domain),
        )

    run(module, act)


if __name__ == "__main__":
    main()
