"""The Hub's CA certificates (`hubCaCertificates`): checked, and trusted next to certifi's roots.

Checked before anything uses them: every PEM block a certificate, every certificate a CA
(basicConstraints cA=TRUE, RFC 5280 4.2.1.9: only a CA certificate may sign a server's), and no
private key pasted in by mistake. The bundle itself is made by the one helper the jobs use too,
`training/src/edge_train/trust.py` (certifi's roots first, then these).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from cryptography import x509

from training.src.edge_train.trust import combined_bundle

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


class CaCertificatesError(ValueError):
    """The PEM text is not a bundle of CA certificates; says which block and why, never a key."""


def parse_ca_certificates(pem: str) -> tuple[x509.Certificate, ...]:
    """Every certificate of `pem`, each checked to be a CA certificate."""
    blocks = _BLOCK.findall(pem)
    if not blocks:
        raise CaCertificatesError("holds no PEM block: paste the CA certificates as -----BEGIN CERTIFICATE----- blocks")
    if re.sub(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", "", pem, flags=re.DOTALL).strip():
        raise CaCertificatesError("holds text outside its PEM blocks; give only -----BEGIN CERTIFICATE----- blocks")
    certificates: list[x509.Certificate] = []
    for number, (label, _body) in enumerate(blocks, start=1):
        if "PRIVATE KEY" in label:
            raise CaCertificatesError(
                f"block {number} is a private key ({label}): never give a key here, only the CA's certificate"
            )
        if label != "CERTIFICATE":
            raise CaCertificatesError(f"block {number} is a {label}, not a CERTIFICATE")
    try:
        certificates = list(x509.load_pem_x509_certificates(pem.encode()))
    except ValueError as error:
        raise CaCertificatesError(f"a certificate does not parse ({error})") from None
    for number, certificate in enumerate(certificates, start=1):
        subject = certificate.subject.rfc4514_string() or "(no subject)"
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CaCertificatesError(
                f"certificate {number} ({subject}) is not a CA certificate (no basicConstraints cA=TRUE): give the "
                "root (and intermediate) CA that signed the Hub's endpoints, not a server's own certificate"
            )
    return tuple(certificates)


def bundle_file(hub_ca_pem: str, directory: Path | None = None) -> Path:
    """certifi's roots and the Hub's CA, checked, in one file (training/src/edge_train/trust.py)."""
    parse_ca_certificates(hub_ca_pem)
    return combined_bundle(hub_ca_pem, directory)


@cache
def _transport(hub_ca_pem: str) -> RequestsTransport:
    return RequestsTransport(connection_verify=str(bundle_file(hub_ca_pem)))


def transport_trusting(hub_ca_pem: str | None) -> HttpTransport | None:
    """One transport per CA bundle and process, verifying against certifi plus the Hub's CA; None
    (azure-core's default: certifi, or $REQUESTS_CA_BUNDLE) when there is no Hub CA."""
    return _transport(hub_ca_pem.strip()) if hub_ca_pem and hub_ca_pem.strip() else None
