"""A pull-only credential for one repository of our registry, for the Hub: no admin user.

A scope map grants exactly `content/read` and `metadata/read` on the model's repository (pull and
list tags; no push, no delete, no other repository), and a token is bound to it. The token is
declared without passwords: `deploy --target edge` asks the registry for a short-lived password
when it deploys (registries/generateCredentials) and hands it to the VM on stdin, so no password
is ever in Pulumi state. Scope maps and tokens: Microsoft Learn, "Create a token with
repository-scoped permissions" (Azure Container Registry); actions as in the ScopeMap model of
Microsoft.ContainerRegistry (e.g. repositories/<name>/content/read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import containerregistry

# The repository `package` pushes for the model `register` names by default (edge-model).
DEFAULT_REPOSITORY = "edge-model"
PULL_ACTIONS = ("content/read", "metadata/read")


def pull_actions(repository: str) -> list[str]:
    if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repository):
        raise ValueError(f"{repository!r} is not a registry repository name (lower case, digits, . _ - /)")
    return [f"repositories/{repository}/{action}" for action in PULL_ACTIONS]


@dataclass(frozen=True)
class RegistryPullTokenArgs:
    resource_group_name: pulumi.Input[str]
    registry_name: pulumi.Input[str]
    provider: azure_native.Provider
    repository: str = DEFAULT_REPOSITORY


class RegistryPullToken(pulumi.ComponentResource):
    """Scope map (pull on one repository) and the token bound to it."""

    token_name: pulumi.Output[str]
    token_id: pulumi.Output[str]
    scope_map_id: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryPullTokenArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:cloud:RegistryPullToken", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        # Scope map and token names: 5-50 letters, digits and hyphens.
        scope_map = containerregistry.ScopeMap(
            f"{name}-scope",
            scope_map_name=f"{name}-pull",
            registry_name=args.registry_name,
            resource_group_name=args.resource_group_name,
            description=f"Pull {args.repository} only (edge-training deploy on the Hub)",
            actions=pull_actions(args.repository),
            opts=child,
        )
        token = containerregistry.Token(
            f"{name}-token",
            token_name=f"{name}-pull",
            registry_name=args.registry_name,
            resource_group_name=args.resource_group_name,
            scope_map_id=scope_map.id,
            status=containerregistry.TokenStatus.ENABLED,
            opts=child,
        )
        self.token_name = token.name
        self.token_id = token.id
        self.scope_map_id = scope_map.id
        self.register_outputs({"tokenName": self.token_name, "tokenId": self.token_id, "scopeMapId": self.scope_map_id})
