"""clients/ssh_keys.py: the one place key formats are accepted, refused and converted."""

from __future__ import annotations

import io

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from clients import ssh_keys
from tests.harness.keys import rsa_key

F = serialization.PrivateFormat


def _key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(rsa_key("ssh-keys").private_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _text(key: object, fmt: serialization.PrivateFormat, passphrase: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", [F.OpenSSH, F.TraditionalOpenSSL, F.PKCS8], ids=["openssh", "pkcs1", "pkcs8"])
def test_every_accepted_format_becomes_the_pem_azure_ml_and_paramiko_take(fmt: serialization.PrivateFormat) -> None:
    key = _key()
    text = _text(key, fmt)
    assert ssh_keys.parse_private_key(text).private_numbers() == key.private_numbers()
    pem = ssh_keys.to_azure_ml_pem(text)
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert ssh_keys.to_azure_ml_pem(pem) == pem  # converting twice changes nothing
    # The preflight loads keys with paramiko's RSAKey: the converted key is one it reads.
    loaded = paramiko.RSAKey.from_private_key(io.StringIO(pem))
    assert loaded.get_base64() == rsa_key("ssh-keys").public_openssh.split()[1]


def _corrupt(pem: str) -> str:
    lines = pem.splitlines()
    return "\n".join([lines[0], lines[1][:10] + "!!" + lines[1][12:], *lines[2:]])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (lambda: _text(_key(), F.PKCS8, b"pw"), "passphrase"),
        (lambda: _text(_key(), F.OpenSSH, b"pw"), "passphrase"),
        (lambda: _text(_key(), F.TraditionalOpenSSL, b"pw"), "passphrase"),
        (lambda: _text(ed25519.Ed25519PrivateKey.generate(), F.OpenSSH), "not an RSA key"),
        (lambda: _text(ed25519.Ed25519PrivateKey.generate(), F.PKCS8), "not an RSA key"),
        (lambda: "", "is empty"),
        (lambda: "hello", "not an OpenSSH, PKCS#1 or PKCS#8"),
        (lambda: rsa_key("ssh-keys").public_openssh, "is a public key"),
        (lambda: _corrupt(_text(_key(), F.PKCS8)), "damaged"),
    ],
    ids=["pkcs8-enc", "openssh-enc", "pkcs1-enc", "ed25519-openssh", "ed25519-pkcs8", "empty", "text", "public",
         "corrupt"],
)  # fmt: skip
def test_refusals_are_value_errors_with_a_reason_and_no_key_material(text, reason: str) -> None:
    value = text()
    with pytest.raises(ssh_keys.KeyFormatError) as caught:
        ssh_keys.parse_private_key(value)
    assert isinstance(caught.value, ValueError)
    assert reason in str(caught.value)
    for line in value.splitlines()[1:-1]:
        assert not line.strip() or line not in str(caught.value)


def test_public_keys_rsa_only_and_matched_to_their_private_half() -> None:
    public = ssh_keys.parse_public_key(rsa_key("ssh-keys").public_openssh)
    assert ssh_keys.same_key(_key(), public)
    assert not ssh_keys.same_key(_key(), ssh_keys.parse_public_key(rsa_key("other-keys").public_openssh))
    with pytest.raises(ssh_keys.KeyFormatError, match="not an RSA key"):
        ssh_keys.parse_public_key(
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
