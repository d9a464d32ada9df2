"""A node's TLS certificate in a running lab: verify it as a client trusting the lab CA
would, and reissue it from the lab CA (the node restarts to load it)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from mxlab.lab import labdir, pki
from mxlab.lab.errors import LabError
from mxlab.lab.mail import tls_context
from mxlab.lab.mtasts import cert_names
from mxlab.lab.plan import LabPlan
from mxlab.lab.runtime.base import Runtime

TLS_PORTS = ("imaps", "submissions")  # RFC 8314 implicit TLS: the handshake comes first


def _tls_port(plan: LabPlan, node: str) -> int:
    n = plan.nodes[node]
    port = next((n.ports[p] for p in TLS_PORTS if p in n.ports), None)
    if port is None:
        raise LabError(f"{node} is a {n.role} node: it serves no TLS")
    return port


def verify(plan: LabPlan, node: str, timeout: float = 5.0) -> tuple[bool, str]:
    """(trusted, why): the node's certificate checked against the lab CA and its name
    (RFC 6125), on its implicit-TLS port."""
    n = plan.nodes[node]
    port = _tls_port(plan, node)
    try:
        with (
            socket.create_connection((n.address, port), timeout) as raw,
            tls_context(plan).wrap_socket(raw, server_hostname=n.fqdn) as tls,
        ):
            until = (tls.getpeercert() or {}).get("notAfter", "?")
            return True, f"{n.fqdn}:{port} trusted (lab CA), valid until {until}"
    except ssl.SSLCertVerificationError as exc:
        return False, f"{n.fqdn}:{port} not trusted: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        return False, f"{n.fqdn}:{port}: {exc}"


def valid_until(plan: LabPlan, node: str) -> float:
    """When the node's certificate (as on disk, what it serves) expires, as a timestamp."""
    from cryptography import x509

    _tls_port(plan, node)
    pem = (labdir.node_dir(plan, node) / "tls" / "cert.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def reissue(plan: LabPlan, runtime: Runtime, node: str, expired: bool = False) -> None:
    """A new certificate for the node from the lab CA, then a restart to load it."""
    _tls_port(plan, node)
    n = plan.nodes[node]
    ca = pki.ensure_ca(Path(plan.lab_dir) / "ca", plan.lab)
    tls = labdir.node_dir(plan, node) / "tls"
    with labdir.private():
        also = cert_names(n.config)  # mta-sts.<domain> it serves policies for
        pki.issue(ca, n.fqdn, n.address, tls / "cert.pem", tls / "key.pem", expired, also=also)
    runtime.restart(plan, node)
