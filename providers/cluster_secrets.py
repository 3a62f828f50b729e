"""The Arc onboarding key and the K3s join token: generated once, kept in state as secrets.

`az connectedk8s connect` onboards a cluster with an RSA key pair it makes itself: the public
half goes to Resource Manager as the connected cluster's `agentPublicKeyCertificate` (base64 of
the DER PKCS#1 RSAPublicKey), the private half (PEM "RSA PRIVATE KEY") to the Arc agents' Helm
chart as `global.onboardingPrivateKey` (Azure/azure-cli-extensions, src/connectedk8s/
azext_connectedk8s/custom.py). The same is done here with `cryptography`, which the project
already uses, inside a dynamic provider: no new provider plugin (pulumi-tls would bring a Go
binary that CI and every developer must download), and the key is made once, on create, so a
later `pulumi up` does not rotate it. Both private values are marked secret
(`additional_secret_outputs`), so the state holds them encrypted; the provider object Pulumi
pickles into the state holds nothing.

Rotation is on purpose only (`k3sJoinTokenRotation`, `arcOnboardingKeyRotation`): each counter
renews its one secret in place, so the connected cluster keeps its resource id and the nodes take
the new value through the day-two channel (docs/operate/day-two.md).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

KEY_BITS = 4096  # what az connectedk8s connect generates
TOKEN_BYTES = 32
SECRET_OUTPUTS = ("onboardingPrivateKey", "joinToken")
PUBLIC_OUTPUTS = ("agentPublicKeyCertificate",)


def public_key_certificate(private_key_pem: str) -> str:
    """`agentPublicKeyCertificate` for a PEM private key: base64 of the DER PKCS#1 public key."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the onboarding key must be an RSA key")
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return base64.b64encode(der).decode()


def new_onboarding_key(bits: int = KEY_BITS) -> str:
    """A new RSA private key as PEM "BEGIN RSA PRIVATE KEY" (PKCS#1), unencrypted: the chart takes it so."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


ROTATIONS = {"onboardingKeyRotation": "onboardingPrivateKey", "joinTokenRotation": "joinToken"}
"""Each counter renews exactly one secret, in place (the resource and the other secret stay)."""


def _count(props: dict[str, Any], key: str) -> int:
    # Absent is 0: state written before the counters existed (it had one `rotation`, always 0)
    # must not read as a rotation.
    return int(props.get(key) or 0)


def _with_key(outs: dict[str, Any]) -> dict[str, Any]:
    private_key = new_onboarding_key(int(outs.get("keyBits") or KEY_BITS))
    return {
        **outs,
        "onboardingPrivateKey": private_key,
        "agentPublicKeyCertificate": public_key_certificate(private_key),
    }


class ClusterSecretsProvider(ResourceProvider):
    """Nothing in the provider object: Pulumi pickles it into the state, and a new pickle (a code
    change, another Pulumi version) reaches `diff` as `__provider`, which is not an input here."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = {**_with_key(props), "joinToken": secrets.token_hex(TOKEN_BYTES)}
        return CreateResult(id_=f"cluster-secrets-{secrets.token_hex(8)}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Only a counter (or a new key size) makes new secrets: rotating means onboarding or joining
        # again, so it is never a side effect of an unrelated change.
        replaces = ["keyBits"] if olds.get("keyBits") != news.get("keyBits") else []
        rotated = [k for k in ROTATIONS if _count(olds, k) != _count(news, k)]
        return DiffResult(changes=bool(replaces or rotated), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = {**olds, **{k: news.get(k) for k in ("keyBits", *ROTATIONS)}}
        outs.pop("rotation", None)
        if _count(olds, "onboardingKeyRotation") != _count(news, "onboardingKeyRotation"):
            outs = _with_key(outs)
        if _count(olds, "joinTokenRotation") != _count(news, "joinTokenRotation"):
            outs["joinToken"] = secrets.token_hex(TOKEN_BYTES)
        return UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class ClusterSecrets(pulumi.dynamic.Resource, module="edge-training", name="ClusterSecrets"):
    """The onboarding key pair and the join token of one cluster."""

    def __init__(
        self,
        name: str,
        join_token_rotation: int = 0,
        onboarding_key_rotation: int = 0,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "keyBits": KEY_BITS,
            "joinTokenRotation": join_token_rotation,
            "onboardingKeyRotation": onboarding_key_rotation,
            **dict.fromkeys(SECRET_OUTPUTS + PUBLIC_OUTPUTS),
        }
        super().__init__(
            ClusterSecretsProvider(),
            name,
            props,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=list(SECRET_OUTPUTS))),
        )

    # Outputs of a dynamic resource are attributes named like its properties; the private ones
    # are wrapped as secrets here as well, whatever the engine did.
    @property
    def onboarding_private_key(self) -> pulumi.Output[str]:
        return pulumi.Output.secret(self.__dict__["onboardingPrivateKey"])

    @property
    def join_token(self) -> pulumi.Output[str]:
        return pulumi.Output.secret(self.__dict__["joinToken"])

    @property
    def agent_public_key_certificate(self) -> pulumi.Output[str]:
        return self.__dict__["agentPublicKeyCertificate"]
