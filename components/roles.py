"""Role assignments the stack declares: one shape for every component that grants a role."""

from __future__ import annotations

import uuid

import pulumi
from pulumi_azure_native import authorization


def assign_role(
    logical_name: str,
    scope: pulumi.Input[str],
    role: str,
    principal_id: pulumi.Input[str | None],
    subscription_id: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> authorization.RoleAssignment:
    """`role` (a built-in role definition id) for a service principal on `scope`.

    The assignment's name is derived from scope, role and principal, so a rerun finds its own
    assignment instead of adding a second one (which Resource Manager would refuse with 409
    RoleAssignmentExists)."""
    return authorization.RoleAssignment(
        logical_name,
        role_assignment_name=pulumi.Output.all(scope, principal_id).apply(
            lambda parts: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{parts[0]}|{role}|{parts[1]}"))
        ),
        scope=scope,
        role_definition_id=pulumi.Output.from_input(subscription_id).apply(
            lambda sub: f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}"
        ),
        principal_id=principal_id,
        principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
        opts=opts,
    )
