"""Mail authentication in the plan: per domain the SPF, DKIM and DMARC records
(RFC 7208, RFC 6376, RFC 7489), a DKIM key pair per selector, and what each relay signs,
checks, forwards and breaks on purpose. Keys live in the lab directory, 0600."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import BaseModel, ConfigDict, Field

from mxlab.lab.errors import TopologyError
from mxlab.lab.mtasts import check_mta_sts, sts_records
from mxlab.lab.topology import Topology, _check_user, is_address
from mxlab.nodes.config import DkimKey, DnsRecord, MailAuth

Algorithm = Literal["ed25519", "rsa"]
SELECTORS: dict[str, str] = {"ed25519": "ed", "rsa": "rsa"}  # algorithm -> s=
WRONG_SELECTOR = "gone"  # a selector no lab zone publishes
_SIGNING = {"ed25519": "ed25519-sha256", "rsa": "rsa-sha256"}
RSA_BITS = 2048  # RFC 8301 §3.2: SHOULD use at least 2048 bits


class DkimKeyPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str
    selector: str
    algorithm: Algorithm
    public: str  # the p= value (RFC 6376 §3.6.1; RFC 8463 §4.2 for Ed25519)
    # written to the lab directory (0600) by labdir.write_plan, never into plan.json
    private: bytes = Field(default=b"", exclude=True, repr=False)

    @property
    def file(self) -> str:
        return f"{self.domain}.{self.selector}.key"


def check_auth(topo: Topology, src: str) -> None:
    """Forwards, sign_as and footers must name things the lab has."""
    for dom, spec in topo.domains.items():
        where = f"domains.{dom}"
        users = {u.lower() for u in spec.users}
        for local, targets in spec.forwards.items():
            _check_user(local, dom, "x", src, f"{where}.forwards.{local}")
            if local.lower() in users:
                raise TopologyError(
                    src, f"{where}.forwards.{local}", "a user has this mailbox already",
                    "forward another local part, or remove the user",
                )  # fmt: skip
            if not targets:
                raise TopologyError(src, f"{where}.forwards.{local}", "no address to forward to")
            for i, target in enumerate(targets):
                if not is_address(target) or target.rsplit("@", 1)[1].lower() == dom:
                    raise TopologyError(
                        src, f"{where}.forwards.{local}[{i}]",
                        f"{target!r} is not an address of another domain",
                        "forward to an address like bob@beta.test",
                    )  # fmt: skip
        if len(set(spec.auth.dkim)) != len(spec.auth.dkim):
            raise TopologyError(
                src, f"{where}.auth.dkim", "an algorithm is named twice", "name each once"
            )
        other = spec.auth.sign_as
        if other is not None and (other == dom or other not in topo.domains):
            known = ", ".join(d for d in topo.domains if d != dom) or "(no other domain)"
            raise TopologyError(
                src, f"{where}.auth.sign_as", f"{other!r} is not another lab domain",
                f"use one of: {known}",
            )  # fmt: skip
        if other is not None and not topo.domains[other].auth.dkim:
            raise TopologyError(
                src, f"{where}.auth.sign_as", f"{other} has no DKIM keys",
                f"give {other} auth.dkim keys",
            )  # fmt: skip
    for name, node in topo.nodes.items():
        if node.footer is not None and node.kind != "relay":
            raise TopologyError(src, f"nodes.{name}.footer", "only relays add footers", "remove it")
    check_mta_sts(topo, src)


def dkim_keys(
    topo: Topology, lab_dir: Path | None, pool: Executor | None = None
) -> list[DkimKeyPlan]:
    """A key pair per domain and algorithm: the lab directory's, else new ones (a lab
    keeps its keys across `up`s); ``lab_dir`` None makes placeholders for validation.
    New keys are made in ``pool`` (the planner's, hashing passwords meanwhile)."""
    keys = [
        DkimKeyPlan(domain=dom, selector=SELECTORS[alg], algorithm=alg, public="")
        for dom, spec in topo.domains.items()
        for alg in spec.auth.dkim
    ]
    if lab_dir is None:
        for plan in keys:
            plan.public = "AAAA"
        return keys
    for plan in keys:
        path = lab_dir / "dkim" / plan.file
        if path.is_file():
            plan.private = path.read_bytes()
    fresh = [plan for plan in keys if not plan.private]
    # RSA generation is OpenSSL's work outside the GIL: a 100-domain lab makes its keys
    # on every core rather than one
    with contextlib.nullcontext(pool) if pool else ThreadPoolExecutor(cpu_count()) as run:
        keys_made = run.map(_new_key, [p.algorithm for p in fresh])
        for plan, private in zip(fresh, keys_made, strict=True):
            plan.private = private
    for plan in keys:
        plan.public = _public(plan.algorithm, plan.private)
    return keys


def cpu_count() -> int:
    """The cores this process may run on: a pool of CPU-bound work (RSA keys, scrypt)
    needs no more threads; scrypt on more threads than cores took 25% more CPU (each
    hash's 16 MiB evicting another's from the cache)."""
    return len(os.sched_getaffinity(0))


def _new_key(alg: str) -> bytes:
    if alg == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        return key.private_bytes(  # PKCS#1, which dkimpy and OpenDKIM both read
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    return base64.b64encode(seed) + b"\n"  # dkimpy's form (dknewkey): the seed, base64


def _public(alg: str, private: bytes) -> str:
    if alg == "rsa":
        # the lab's own key, written 0600 by the planner: the full RSA check (60 ms a
        # key) would only slow every `up`
        key = serialization.load_pem_private_key(
            private, password=None, unsafe_skip_rsa_key_validation=True
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()
    seed = base64.b64decode(private.strip())
    pub = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return base64.b64encode(pub).decode()  # RFC 8463 §4.2: the raw 32-byte key


def _txt(text: str) -> str:
    """TXT rdata in zone-file form, split into strings of at most 255 octets (RFC 1035)."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


def sending_relays(topo: Topology, dom: str) -> list[str]:
    """The relays that connect out with the domain's mail: its submission relay and MX
    hosts, and the smarthosts their mail leaves through."""
    spec = topo.domains[dom]
    start = [spec.submission, *(m.node for m in spec.mx)]
    found: list[str] = []
    for node in start:
        while node is not None and node not in found:
            found.append(node)
            node = topo.nodes[node].next_hop
    return found


def auth_records(
    topo: Topology, fqdns: dict[str, str], addresses: dict[str, str], keys: list[DkimKeyPlan]
) -> list[DnsRecord]:
    """SPF (RFC 7208 §3), DKIM keys (RFC 6376 §3.6.2.1), DMARC (RFC 7489 §6.1) and
    MTA-STS per domain; an SPF record for each relay's own name, for HELO checks of
    bounces (§2.3)."""
    records: list[DnsRecord] = []
    for dom, spec in topo.domains.items():
        if spec.auth.spf:
            ips = " ".join(f"ip4:{addresses[n]}" for n in sending_relays(topo, dom))
            records.append(DnsRecord(name=f"{dom}.", type="TXT", rdata=_txt(f"v=spf1 {ips} -all")))
        if spec.auth.dmarc != "off":
            policy = f"v=DMARC1; p={spec.auth.dmarc}"
            records.append(DnsRecord(name=f"_dmarc.{dom}.", type="TXT", rdata=_txt(policy)))
    for key in keys:
        if topo.domains[key.domain].auth.missing_key:
            continue
        value = f"v=DKIM1; k={key.algorithm}; p={key.public}"
        name = f"{key.selector}._domainkey.{key.domain}."
        records.append(DnsRecord(name=name, type="TXT", rdata=_txt(value)))
    for name, node in topo.nodes.items():
        fqdn = fqdns[name]
        if node.kind == "relay" and fqdn not in topo.domains:
            rdata = _txt(f"v=spf1 ip4:{addresses[name]} -all")
            records.append(DnsRecord(name=f"{fqdn}.", type="TXT", rdata=rdata))
    records += sts_records(topo, fqdns, addresses)  # MTA-STS and TLS-RPT, where asked
    # the topology's own record of a kind wins: two SPF records are a permerror (§4.5)
    own = {(r.name.rstrip(".").lower(), _tag(r.value)) for r in topo.records if r.type == "TXT"}
    return [r for r in records if (r.name.rstrip(".").lower(), _tag(r.rdata)) not in own]


def _tag(rdata: str) -> str:
    """The version tag a TXT record starts with: v=spf1, v=DMARC1, v=DKIM1."""
    return rdata.lstrip('"').split(";")[0].split(" ")[0].lower()


def relay_auth(
    topo: Topology,
    name: str,
    keys: Mapping[str, list[DkimKeyPlan]],
    key_dir: str,
    submits: list[str],
    final: list[str],
    internal: list[str],
) -> MailAuth:
    """What relay ``name`` signs (the mail of the domains it ``submits`` for), checks
    (mail for the domains it is ``final`` for, not from the ``internal`` relays of the
    same domains), forwards, seals and breaks; ``keys`` by domain."""
    sign: dict[str, list[DkimKey]] = {}
    forwards: dict[str, list[str]] = {}
    srs_domain, arc = "", None
    for dom in submits:
        spec = topo.domains[dom]
        sign[dom] = [
            DkimKey(
                domain=k.domain,
                selector=WRONG_SELECTOR if spec.auth.wrong_selector else k.selector,
                algorithm=_SIGNING[k.algorithm],  # type: ignore[arg-type]
                key=f"{key_dir}/{k.file}",
            )
            for k in keys.get(spec.auth.sign_as or dom, [])
        ]
    for dom in final:
        spec = topo.domains[dom]
        forwards |= {f"{lp}@{dom}": targets for lp, targets in spec.forwards.items()}
        if spec.forwards and spec.auth.srs and not srs_domain:
            srs_domain = dom
        rsa_key = next((k for k in keys.get(dom, []) if k.algorithm == "rsa"), None)
        if spec.forwards and spec.auth.arc and rsa_key is not None and arc is None:
            # RFC 8617 §4.1.3: ARC signs with rsa-sha256
            arc = DkimKey(
                domain=dom,
                selector=rsa_key.selector,
                algorithm="rsa-sha256",
                key=f"{key_dir}/{rsa_key.file}",
            )
    verify = bool(final) and all(topo.domains[d].auth.verify for d in final)
    return MailAuth(
        verify=verify,
        sign=sign,
        arc=arc,
        forwards=forwards,
        srs_secret=f"{key_dir}/srs.secret" if srs_domain else None,
        srs_domain=srs_domain,
        footer=topo.nodes[name].footer,
        internal=internal,
    )


def write_keys(lab_dir: Path, keys: list[DkimKeyPlan], users: dict[Path, MailAuth]) -> None:
    """The lab's keys under dkim/, and in each relay's node directory (``auth``, as TLS
    keys sit in ``tls``) the keys it signs or seals with and its SRS secret; all 0600."""
    from mxlab.lab.pki import _write_private

    by_file = {k.file: k for k in keys if k.private}
    for key in by_file.values():
        _write_private(lab_dir / "dkim" / key.file, key.private)
    for ndir, auth in users.items():
        used = [k for ks in auth.sign.values() for k in ks] + ([auth.arc] if auth.arc else [])
        for name in {Path(k.key).name for k in used if Path(k.key).name in by_file}:
            _write_private(ndir / "auth" / name, by_file[name].private)
        secret = ndir / "auth" / "srs.secret"
        if auth.srs_secret is not None and not secret.exists():
            _write_private(secret, secrets.token_hex(16).encode() + b"\n")
