"""Trust an Azure Stack Hub's own certificate authority next to the public ones, never instead.

A Hub's endpoints (Resource Manager, AD FS, blob storage) are signed by the operator's PKI, which
no public bundle holds (Microsoft Learn, "Use API version profiles with Python in Azure Stack
Hub": "If you are using the ASDK, you must explicitly trust the CA root certificate"). Pointing
`REQUESTS_CA_BUNDLE` at the Hub's CA alone would break every public endpoint a job also reaches
(the workspace, the registry, PyPI), so the bundle made here is certifi's, followed by the
Hub's certificates. This is the one place that makes that bundle: the deploy side (providers,
CLI) and the job side (`EDGE_HUB_CA_FILE`, a path the cluster or the VM mounts) both call it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

HUB_CA_FILE_VARIABLE = "EDGE_HUB_CA_FILE"
"""A file of the Hub's CA certificates (PEM), as mounted into jobs: /etc/edge-training/hub-ca.pem."""
BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
"""What requests/azure-core and Python's ssl (urllib, aiohttp) read for the trusted roots."""


class TrustError(RuntimeError):
    """The Hub's CA file cannot be read or holds no certificate; names the file."""


def combined_bundle(hub_ca_pem: str, directory: Path | None = None) -> Path:
    """certifi's bundle followed by `hub_ca_pem`, in a file named after its content (written once,
    atomically, world-readable: CA certificates are public)."""
    import certifi

    public = Path(certifi.where()).read_text()
    extra = hub_ca_pem.strip() + "\n"
    text = public.rstrip("\n") + "\n\n# Azure Stack Hub CA (edge-training)\n" + extra
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = directory or Path(tempfile.gettempdir()) / f"edge-training-trust-{os.getuid()}"
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    bundle = folder / f"ca-bundle-{digest}.pem"
    if not bundle.is_file() or bundle.read_text() != text:
        partial = folder / f".{bundle.name}.{os.getpid()}"
        partial.write_text(text)
        partial.chmod(0o644)
        partial.replace(bundle)
    return bundle


def trust_hub_ca(environ: MutableMapping[str, str] | None = None) -> str | None:
    """When `$EDGE_HUB_CA_FILE` names the Hub's CA: the combined bundle's path, also set as
    REQUESTS_CA_BUNDLE and SSL_CERT_FILE where those are unset (an operator's own choice wins)."""
    env = os.environ if environ is None else environ
    source = env.get(HUB_CA_FILE_VARIABLE)
    if not source:
        return None
    try:
        pem = Path(source).read_text()
    except OSError as error:
        raise TrustError(f"${HUB_CA_FILE_VARIABLE}: cannot read {source} ({error.strerror})") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise TrustError(f"${HUB_CA_FILE_VARIABLE}: {source} holds no PEM certificate")
    bundle = str(combined_bundle(pem))
    for name in BUNDLE_VARIABLES:
        env.setdefault(name, bundle)
    return bundle
