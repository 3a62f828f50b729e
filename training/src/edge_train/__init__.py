"""edge_train: read Azure Stack Hub training data in place, from any training code.

Installable on its own (training/src/pyproject.toml) and added to every job's code snapshot by
`python -m training submit`. Public API: `stage`, `fingerprint`, `lineage_tags`, `HubLocation`,
and the errors they raise. Needs azure-storage-blob (the client a caller may hand in), pycurl
(staging's own reads, over libcurl), requests and certifi (the reads' proxy and CA bundle), and
tqdm for a progress bar on a terminal; nothing of the rest of the repository.
"""

from __future__ import annotations

import importlib
from typing import Any

from .location import HubLocation, LocationError

__version__ = "0.3.0"
__all__ = [
    "CredentialNotFound",
    "HubLocation",
    "LocationError",
    "Staged",
    "StagingError",
    "fingerprint",
    "lineage_tags",
    "stage",
]
# Resolved on first use (PEP 562), so that parsing a hub:// location imports no storage SDK:
# the training CLI does that before it decides whether it needs the SDK at all.
_LAZY = {
    "Staged": "hub",
    "stage": "hub",
    "fingerprint": "hub",
    "lineage_tags": "hub",
    "CredentialNotFound": "credentials",
    "StagingError": "staging",
}
_SUBMODULES = ("hub", "credentials", "staging", "location", "model_rows", "accelerators")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
