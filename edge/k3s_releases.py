"""The K3s releases this project can install or upgrade to, with their checksums, and the
Kubernetes minor versions the Azure ML extension supports: data, kept with the date it was true.

Adding a release: take the `k3s` line of the release's sha256sum-amd64.txt
(https://github.com/k3s-io/k3s/releases/download/<tag>/sha256sum-amd64.txt, "+" written "%2B")
and the SHA-256 of install.sh at the same tag (raw.githubusercontent.com/k3s-io/k3s/<tag>/install.sh),
add a `K3sRelease` below, then `pulumi config set k3sVersion <tag>`. First boot and the in-place
upgrade both refuse a binary whose hash differs from the one recorded here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

K3S_VERSION_FORMAT = re.compile(r"v(?P<major>1)\.(?P<minor>\d{1,3})\.(?P<patch>\d{1,3})\+k3s(?P<build>[1-9]\d?)")
"""vX.Y.Z+k3sN, the tag format of k3s-io/k3s releases."""


@dataclass(frozen=True)
class K3sRelease:
    version: str
    sha256: str
    """The `k3s` (linux-amd64) line of the release's sha256sum-amd64.txt."""
    installer_sha256: str
    """install.sh at the release's tag."""

    @property
    def minor(self) -> str:
        match = K3S_VERSION_FORMAT.fullmatch(self.version)
        if match is None:
            raise ValueError(f"{self.version!r} is not a K3s version vX.Y.Z+k3sN")
        return f"{match['major']}.{match['minor']}"


RELEASES = MappingProxyType(
    {
        r.version: r
        for r in (
            K3sRelease(
                version="v1.36.2+k3s1",
                sha256="65a55ec56c24eab44383086166ec620a491952b7e23941a49ddca6e8a4c4b4de",
                installer_sha256="46177d4c99440b4c0311b67233823a8e8a2fc09693f6c89af1a7161e152fbfad",
            ),
        )
    }
)
DEFAULT_VERSION = "v1.36.2+k3s1"


@dataclass(frozen=True)
class SupportWindow:
    """Kubernetes minors supported by the Azure ML extension on a given date."""

    newest: str
    oldest: str
    as_of: str
    source: str

    def minors(self) -> tuple[str, ...]:
        major, low = (int(p) for p in self.oldest.split("."))
        high = int(self.newest.split(".")[1])
        return tuple(f"{major}.{n}" for n in range(low, high + 1))


# "Kubernetes clusters installing Azure Machine Learning extension have a version support window of
# "N-2", that is aligned with Azure Kubernetes Service (AKS) version support policy, where 'N' is the
# latest GA minor version of Azure Kubernetes Service" (MicrosoftDocs/azure-ai-docs,
# articles/machine-learning/reference-kubernetes.md, "Supported Kubernetes version and region").
# N as recorded by this project for the date below (the minor of the K3s release it pins, which
# the project's first boot was written against); move both when AKS ships the next minor.
AZUREML_EXTENSION_WINDOW = SupportWindow(
    newest="1.36",
    oldest="1.34",
    as_of="2026-12-02",
    source='learn.microsoft.com/azure/machine-learning/reference-kubernetes, "Supported Kubernetes version and region"',
)


def problem_with(version: str, window: SupportWindow = AZUREML_EXTENSION_WINDOW) -> str | None:
    """Why `version` cannot be installed, or None."""
    match = K3S_VERSION_FORMAT.fullmatch(version)
    if match is None:
        return f"{version!r} is not a K3s release tag vX.Y.Z+k3sN, e.g. {DEFAULT_VERSION}"
    minor = f"{match['major']}.{match['minor']}"
    if minor not in window.minors():
        return (
            f"{version} is Kubernetes {minor}; the Azure ML extension supports {window.oldest} to {window.newest} "
            f"(N-2 of AKS as of {window.as_of}: {window.source})"
        )
    if version not in RELEASES:
        return (
            f"no checksums recorded for {version}: add its sha256sum-amd64.txt `k3s` line and install.sh hash "
            f"to edge/k3s_releases.py (known: {', '.join(sorted(RELEASES))})"
        )
    return None
