"""Where training data lives on the Hub: `hub://<container>/<prefix>`, checked and normalised.

Pure Python on purpose: the training CLI parses these before it imports any SDK.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

SCHEME = "hub://"
# Azure's container naming rule: 3-63 lowercase letters, digits and single hyphens, starting and
# ending with a letter or digit (learn.microsoft.com, "Naming and referencing containers, blobs,
# and metadata"). `$root` and friends are not training data.
CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# Blob names are at most 1,024 characters; a prefix is a folder of them.
MAX_PREFIX = 1024


class LocationError(ValueError):
    """A Hub location that is malformed or would leave its container."""


def normalise_prefix(prefix: str) -> str:
    """A folder inside the container: "" (all of it) or "a/b/". Refuses anything that climbs out
    ("..", a leading "/", a backslash) instead of guessing what was meant."""
    if prefix in ("", "/"):
        return ""
    if "\\" in prefix or "\x00" in prefix or any(ord(c) < 32 for c in prefix):
        raise LocationError(f"prefix {prefix!r} holds a backslash or a control character")
    if prefix.startswith("/"):
        raise LocationError(f"prefix {prefix!r} starts with '/': prefixes are relative to the container")
    parts = prefix.split("/")
    if ".." in parts:
        raise LocationError(f"prefix {prefix!r} climbs out of the container with '..'")
    normal = posixpath.normpath(prefix)
    if normal == ".":
        return ""
    if len(normal) + 1 > MAX_PREFIX:
        raise LocationError(f"prefix {prefix[:40]!r}... is longer than {MAX_PREFIX} characters")
    return normal + "/"


def check_container(container: str) -> str:
    if not CONTAINER.match(container):
        raise LocationError(
            f"container {container!r} is not a valid name (3-63 lowercase letters, digits and single hyphens)"
        )
    return container


@dataclass(frozen=True)
class HubLocation:
    container: str
    prefix: str = ""

    def __post_init__(self) -> None:
        check_container(self.container)
        object.__setattr__(self, "prefix", normalise_prefix(self.prefix))

    @classmethod
    def parse(cls, uri: str) -> HubLocation:
        """`hub://training-data/churn/` -> HubLocation("training-data", "churn/")."""
        if not isinstance(uri, str) or not uri.startswith(SCHEME):
            raise LocationError(f"{uri!r} is not a Hub location: write hub://<container>/<prefix>")
        container, _, prefix = uri.removeprefix(SCHEME).partition("/")
        return cls(container, prefix)

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.container}/{self.prefix}"

    def __str__(self) -> str:
        return self.uri
