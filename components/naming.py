"""Azure naming rules, and the names this project derives when the stack names none.

Rules from "Naming rules and restrictions for Azure resources" (Microsoft Learn) and the Azure ML
compute documentation. Derived names are pure functions of project, organization and stack, so
the same stack always gets the same names; the globally unique ones carry a short hash so that
two organizations' "dev" stacks do not collide.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class NameRule:
    what: str
    pattern: re.Pattern[str]
    explanation: str

    def problem(self, value: str) -> str | None:
        """Why `value` is not a valid name, or None when it is."""
        if self.pattern.fullmatch(value):
            return None
        return f"{value!r} is not a valid {self.what} name: {self.explanation}"


STORAGE_ACCOUNT = NameRule("storage account", re.compile(r"[a-z0-9]{3,24}"), "3-24 lowercase letters and digits")
CONTAINER_REGISTRY = NameRule("container registry", re.compile(r"[a-zA-Z0-9]{5,50}"), "5-50 letters and digits")
ML_WORKSPACE = NameRule(
    "Azure ML workspace",
    re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}"),
    "3-33 letters, digits, hyphens and underscores, starting with a letter or digit",
)
ML_COMPUTE = NameRule(
    "Azure ML compute",
    re.compile(r"[a-zA-Z][a-zA-Z0-9-]{1,15}"),
    "2-16 letters, digits and hyphens, starting with a letter",
)
BLOB_CONTAINER = NameRule(
    "blob container",
    re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"),
    "3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
)
RESOURCE_GROUP = NameRule(
    "resource group",
    re.compile(r"[-\w.()]{0,89}[-\w()]"),
    "1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending in a period",
)
EXPERIMENT = NameRule(
    "Azure ML experiment",
    re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}"),
    "1-255 letters, digits, underscores, periods and hyphens, starting with a letter or digit",
)
LINUX_ADMIN = NameRule(
    "Linux admin user",
    re.compile(r"[a-z_][a-z0-9_-]{0,31}"),
    "1-32 lowercase letters, digits, underscores and hyphens, not starting with a digit or hyphen",
)

# Azure refuses these as VM admin user names (OSProfile.adminUsername).
RESERVED_ADMIN_NAMES = frozenset(
    [
        "administrator",
        "admin",
        "user",
        "user1",
        "test",
        "user2",
        "test1",
        "user3",
        "admin1",
        "1",
        "123",
        "a",
        "actuser",
        "adm",
        "admin2",
        "aspnet",
        "backup",
        "console",
        "david",
        "guest",
        "john",
        "owner",
        "root",
        "server",
        "sql",
        "support",
        "support_388945a0",
        "sys",
        "test2",
        "test3",
        "user4",
        "user5",
    ]
)


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def stable_suffix(*parts: str, length: int = 6) -> str:
    """A short hex digest of `parts`: the same stack always gets the same suffix."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def globally_unique_name(prefix: str, stack: str, seed: str, max_length: int) -> str:
    """`prefix` + the stack's letters and digits + a stable suffix, cut to `max_length`."""
    suffix = stable_suffix(seed)
    return (prefix + _alnum(stack))[: max_length - len(suffix)] + suffix


def workspace_name(stack: str) -> str:
    core = re.sub(r"[^a-zA-Z0-9_-]", "-", stack)
    return f"mlw-{core}"[:33]


def resource_group_name(project: str, stack: str) -> str:
    core = re.sub(r"[^-\w.()]", "-", f"{project}-{stack}")
    return f"rg-{core}"[:90].rstrip(".")


def hub_resource_name(kind: str, stack: str) -> str:
    """A name for a Hub resource within its resource group: `<kind>-edge-<stack>`, at most 64 characters.

    Letters, digits and hyphens only, which every Hub resource type here accepts (a VM's
    computer name included).
    """
    core = re.sub(r"[^a-zA-Z0-9-]", "-", stack).strip("-") or "stack"
    return f"{kind}-edge-{core}"[:64].rstrip("-")
