"""The public face of edge_train: stage Hub data to local files, fingerprint what was staged.

    import edge_train
    staged = edge_train.stage("hub://training-data/churn/")   # cached, atomic, in parallel
    frame = read_my_files(staged.paths)
    mlflow.set_tags(edge_train.lineage_tags(staged))

The storage account and its credential come from the machine, never from the job definition:
$EDGE_ACCOUNT_URL (set by `python -m training submit`) and the credential file or variables read
by `credentials.resolve`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import credentials, staging
from .location import HubLocation

log = logging.getLogger(__name__)

ACCOUNT_URL_VARIABLE = "EDGE_ACCOUNT_URL"
CACHE_VARIABLE = "EDGE_CACHE_DIR"
DEFAULT_CACHE = Path("/tmp/edge-training-cache")  # noqa: S108 (a cache, reused across runs on purpose)
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")


@dataclass(frozen=True)
class Staged:
    """What `stage` made local: the files, in blob-name order, and how they got there."""

    location: HubLocation
    directory: Path
    blobs: tuple[staging.StagedBlob, ...]
    downloaded: int
    reused: int
    bytes_downloaded: int

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(b.path for b in self.blobs)

    def paths_ending(self, suffix: str) -> tuple[Path, ...]:
        return tuple(b.path for b in self.blobs if b.name.endswith(suffix))


def stage(
    source: str | HubLocation,
    cache_dir: Path | str | None = None,
    *,
    account_url: str | None = None,
    credential_file: str | None = None,
    service: Any = None,
    workers: int = 16,
) -> Staged:
    """Make every blob under `source` a local file (unchanged blobs are not downloaded again).

    `cache_dir` defaults to $EDGE_CACHE_DIR or /tmp/edge-training-cache, then <account>/<container>
    (`default_cache`); `service` (a BlobServiceClient) replaces the account URL and credential lookup."""
    location = source if isinstance(source, HubLocation) else HubLocation.parse(source)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if service is None:
        credential = credentials.resolve(credential_file)
        log.info("storage credential from %s", credential.source)
        service = credential.service_client(account_url or os.environ.get(ACCOUNT_URL_VARIABLE))
    if cache_dir is None:
        cache_dir = default_cache(service.account_name, location.container)
    container = service.get_container_client(location.container)
    result = staging.stage_blobs(container, location.prefix, Path(cache_dir), workers=workers)
    return Staged(
        location=location,
        directory=Path(cache_dir),
        blobs=tuple(result.blobs),
        downloaded=result.downloaded,
        reused=result.reused,
        bytes_downloaded=result.bytes_downloaded,
    )


def default_cache(account: str | None, container: str) -> Path:
    """The cache of one container of one account: two Hub accounts may each have a container of
    the same name, and one cache for both would mix (and prune) each other's blobs.

    Storage account names are 3-24 lowercase letters and digits (Azure's naming rules); any other
    name (an emulator's, a custom domain's) is kept readable and made safe as one path segment."""
    name = account or "default-account"
    if not _ACCOUNT.fullmatch(name):
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{re.sub(r'[^A-Za-z0-9-]', '-', name)[:40]}-{digest}"
    return Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE) / name / container


def fingerprint(staged: Staged, include: Callable[[str], bool] | None = None) -> str:
    """SHA-256 over the blob names and content hashes (those `include` accepts): the same data
    gives the same fingerprint wherever it was staged."""
    return staging.data_fingerprint(b for b in staged.blobs if include is None or include(b.name))


def lineage_tags(staged: Staged, data_fingerprint: str | None = None) -> dict[str, str]:
    """Tags that tie a run or a model to the exact data it saw (MLflow tags are strings)."""
    return {
        "data_fingerprint": data_fingerprint or fingerprint(staged),
        "hub_location": staged.location.uri,
        "hub_blobs": str(len(staged.blobs)),
    }
