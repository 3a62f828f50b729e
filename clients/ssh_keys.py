"""The one place that accepts SSH key material and turns it into what Azure ML and the VM take.

Azure ML's attach (`VirtualMachineSshCredentials.privateKeyData`) wants an unencrypted RSA key in
traditional PEM ("BEGIN RSA PRIVATE KEY"); people hand us what `ssh-keygen` writes today (OpenSSH
format), PKCS#1 or PKCS#8 PEM. All three are parsed here, checked, and converted, so that config
validation, the preflight and the attach agree on what a valid key is.

Why RSA only, for the VM's public key as well: Microsoft Learn, "Detailed steps: Create and manage
SSH keys for authentication to a Linux VM in Azure" (Supported SSH key formats) long read "Azure
currently supports SSH protocol 2 (SSH-2) RSA public-private key pairs with a minimum length of
2048 bits. Other key formats such as ED25519 and ECDSA are not supported"; ED25519 for Linux VMs
came to global Azure later, first as a preview, and nothing documents it for the older compute
profile (2020-06-01) the Hub runs. And the attach hands Azure ML the private half of the same
pair, which Azure ML takes as an RSA PEM. So one rule for both halves: RSA, at least 2048 bits,
no passphrase. (An ed25519 key for the VM alone would need a second pair just for the attach.)
"""

from __future__ import annotations

import functools

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MIN_RSA_BITS = 2048

_OPENSSH = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_PKCS1 = b"-----BEGIN RSA PRIVATE KEY-----"
_PKCS8 = b"-----BEGIN PRIVATE KEY-----"
_PKCS8_ENCRYPTED = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_PUTTY = b"PuTTY-User-Key-File-"
_OTHER_PEM = (b"-----BEGIN EC PRIVATE KEY-----", b"-----BEGIN DSA PRIVATE KEY-----")


class KeyFormatError(ValueError):
    """The key text is not a usable key; the message says why and never contains the key."""


def _explain_unsupported(data: bytes) -> str:
    if _PUTTY in data:
        return "is a PuTTY .ppk key; export it in OpenSSH format (puttygen key.ppk -O private-openssh)"
    if any(marker in data for marker in _OTHER_PEM):
        return "is not an RSA key: Azure ML attaches VMs with RSA keys (ssh-keygen -t rsa -b 4096)"
    if b"PUBLIC KEY" in data or data.lstrip().startswith((b"ssh-", b"ecdsa-")):
        return "is a public key; the private key is needed here"
    return "is not an OpenSSH, PKCS#1 or PKCS#8 PEM private key"


def parse_private_key(text: str) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key of at least MIN_RSA_BITS from OpenSSH, PKCS#1 or PKCS#8 text.

    Raises KeyFormatError saying what is wrong (passphrase, not RSA, too short, not a key).
    """
    data = text.strip().encode()
    if not data:
        raise KeyFormatError("is empty")
    if _PKCS8_ENCRYPTED in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise KeyFormatError("is protected by a passphrase; Azure ML needs the key without one (ssh-keygen -p -N '')")
    if not (_OPENSSH in data or _PKCS1 in data or _PKCS8 in data):
        raise KeyFormatError(_explain_unsupported(data))
    return _parsed(data)


@functools.lru_cache(maxsize=8)
def _parsed(data: bytes) -> rsa.RSAPrivateKey:
    """The checked key of `data`, parsed once per process: loading checks the RSA key's
    consistency, about 50 ms at 4096 bits, and a program reads the same key for the config check,
    the preflight and the attach (a failure is raised again each time, never cached)."""
    try:
        if _OPENSSH in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError as error:
        # cryptography raises TypeError when a key is encrypted and no password was given.
        raise KeyFormatError(
            "is protected by a passphrase; Azure ML needs the key without one (ssh-keygen -p -N '')"
        ) from error
    except UnsupportedAlgorithm as error:
        raise KeyFormatError("uses an algorithm this program cannot read; use an RSA key") from error
    except ValueError as error:
        # The library's message can quote key bytes; say only what kind of failure it was.
        raise KeyFormatError("is damaged or truncated: it looks like a private key but does not parse") from error
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFormatError("is not an RSA key: Azure ML attaches VMs with RSA keys (ssh-keygen -t rsa -b 4096)")
    if key.key_size < MIN_RSA_BITS:
        raise KeyFormatError(f"is an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return key


def to_azure_ml_pem(text: str) -> str:
    """The key as Azure ML's privateKeyData takes it: traditional PEM, "BEGIN RSA PRIVATE KEY"."""
    return azure_ml_pem(parse_private_key(text))


def azure_ml_pem(key: rsa.RSAPrivateKey) -> str:
    """An already parsed key as to_azure_ml_pem writes it (parsing checks the key: ~0.1 s at 4096 bits)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def public_openssh(key: rsa.RSAPrivateKey) -> str:
    """The `ssh-rsa AAAA...` line for `key`, without a comment."""
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def parse_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key of at least MIN_RSA_BITS from an OpenSSH `ssh-rsa AAAA... comment` line."""
    data = text.strip().encode()
    if not data:
        raise KeyFormatError("is empty")
    if b"PRIVATE KEY" in data:
        raise KeyFormatError("is a private key; the public key (the .pub file) goes here")
    try:
        key = serialization.load_ssh_public_key(data)
    except UnsupportedAlgorithm as error:
        raise KeyFormatError("is not an RSA key (ssh-keygen -t rsa -b 4096): Azure ML attaches with RSA") from error
    except (ValueError, TypeError) as error:
        raise KeyFormatError("is not an OpenSSH public key line (ssh-rsa AAAA... comment)") from error
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError("is not an RSA key (ssh-keygen -t rsa -b 4096): Azure ML attaches with RSA")
    if key.key_size < MIN_RSA_BITS:
        raise KeyFormatError(f"is an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return key


def same_key(private_key: rsa.RSAPrivateKey, public_key: rsa.RSAPublicKey) -> bool:
    """Whether `public_key` is the public half of `private_key`."""
    return private_key.public_key().public_numbers() == public_key.public_numbers()
