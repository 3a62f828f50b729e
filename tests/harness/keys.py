"""SSH key material generated for tests: nothing real is ever committed."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@dataclass(frozen=True)
class KeyPair:
    private_pem: str = field(repr=False)
    """Traditional PEM ("BEGIN RSA PRIVATE KEY"), the format Azure ML takes."""
    private_openssh: str = field(repr=False)
    public_openssh: str

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint as `ssh-keygen -lf` prints it."""
        blob = base64.b64decode(self.public_openssh.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _pair(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, pem_format: serialization.PrivateFormat) -> KeyPair:
    return KeyPair(
        private_pem=key.private_bytes(serialization.Encoding.PEM, pem_format, serialization.NoEncryption()).decode(),
        private_openssh=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode(),
        public_openssh=key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode(),
    )


@cache
def rsa_key(label: str = "user", bits: int = 2048) -> KeyPair:
    """An RSA key pair, the same one for the same label within a test run."""
    del label  # only distinguishes cache entries
    return _pair(
        rsa.generate_private_key(public_exponent=65537, key_size=bits), serialization.PrivateFormat.TraditionalOpenSSL
    )


@cache
def ed25519_key(label: str = "user") -> KeyPair:
    del label
    return _pair(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8)
