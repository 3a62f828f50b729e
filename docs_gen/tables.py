"""The generators: each returns one region's Markdown, read from the code that decides it."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = ROOT / "Pulumi.yaml"
CONFIG_MODULE = ROOT / "components" / "config.py"
COMPONENTS = ROOT / "components"


def _cell(text: object) -> str:
    """One Markdown table cell: one line, pipes escaped, and outside code spans `<` and `>` as
    entities (Pulumi.yaml says rg-<project>-<stack>, which HTML would take for tags)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _listed(values: Iterable[object]) -> str:
    return ", ".join(f"`{v}`" for v in values)


# --- configuration reference --------------------------------------------------------------------

_SECTION = re.compile(r"^  # --- (?P<title>.+?) -+\s*$")
_KEY = re.compile(r"^  (?P<key>[A-Za-z][A-Za-z0-9]*):\s*$")


def _sections(text: str) -> dict[str, str]:
    """Each key's section, from the `# --- Title ---` comments Pulumi.yaml groups its keys with."""
    section, found = "Configuration", {}
    for line in text.splitlines():
        if match := _SECTION.match(line):
            section = match["title"]
        elif match := _KEY.match(line):
            found[match["key"]] = section
    return found


def _resolve(node: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """A literal, a module constant, or a constant of a module config.py imports (naming.X)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr)
    raise ValueError(f"cannot read a limit from {ast.unparse(node)}")


def config_checks() -> dict[str, list[str]]:
    """What components/config.py checks of each key, read from its own calls: `integer(key, low,
    high)`, `check_name(key, value, naming.RULE)`, ..., so a changed limit changes the docs."""
    from components import config, naming

    namespace = vars(config)
    checks: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(CONFIG_MODULE.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        key, method = first.value, node.func.attr
        if method == "integer":
            low, high = (_resolve(a, namespace) for a in node.args[1:3])
            text = f"a whole number from {low} to {high}"
        elif method == "check_name":
            rule: naming.NameRule = _resolve(node.args[2], namespace)
            text = f"Azure's {rule.what} naming rule: {rule.explanation}"
        elif method == "check_uuid":
            text = "a UUID"
        elif method == "check_region":
            text = "a lowercase region name"
        elif method == "check_azure_region":
            text = f"one of Azure's public regions ({config.REGIONS_FILE.relative_to(ROOT).as_posix()})"
        else:
            continue
        if text not in checks.setdefault(key, []):
            checks[key].append(text)
    return checks


def _constant_checks() -> dict[str, list[str]]:
    """Checks whose limits are constants of components/config.py (or what it imports)."""
    from components import config, naming

    c = config
    return {
        "registrySku": [f"one of {_listed(c.REGISTRY_SKUS)}"],
        "hubIdentityProvider": [f"one of {_listed(c.IDENTITY_PROVIDERS)}"],
        "hubBootstrap": [f"one of {_listed(c.BOOTSTRAPS)}"],
        "edgeComputeMode": [f"one of {_listed(c.EDGE_COMPUTE_MODES)}"],
        "hubVmSize": [
            f"a size of the families Azure Stack Hub offers: {', '.join(c.HUB_VM_SIZE_FAMILIES)}",
            f"empty: `{c.KUBERNETES_DEFAULT_VM_SIZE}` in kubernetes mode, `{c.VIRTUAL_MACHINE_DEFAULT_VM_SIZE}` "
            "in virtual-machine mode",
            f"kubernetes mode: at least {c.EXTENSION_MIN_VCPUS} vCPUs and {c.EXTENSION_MIN_MEMORY_GIB:g} GiB "
            "(the Azure ML extension's minimum)",
        ],
        "instanceTypeCpu": [
            f"fits on the node beside the system pods ({c.SYSTEM_RESERVED_VCPUS:g} vCPU kept for them)"
        ],
        "instanceTypeMemory": [
            f"fits on the node beside the system pods ({c.SYSTEM_RESERVED_MEMORY_GIB:g} GiB kept for them)"
        ],
        "kubernetesNamespace": [f"not one of {_listed(sorted(c._RESERVED_NAMESPACES))}"],
        "tags": [
            f"at most {c.MAX_TAGS} per resource, {_listed(c.BASE_TAG_KEYS)} included; names up to "
            f"{c.MAX_TAG_NAME} characters without {' '.join(sorted(c._TAG_KEY_FORBIDDEN))}, unique ignoring "
            f"case; values up to {c.MAX_TAG_VALUE} characters"
        ],
        "hubSubnetPrefix": [
            f"inside hubVnetAddressSpace; IPv4 /{c.MIN_IPV4_SUBNET_PREFIX} to /{c.MAX_IPV4_SUBNET_PREFIX}, "
            f"IPv6 exactly /{c.IPV6_SUBNET_PREFIX}"
        ],
        "hubVnetAddressSpace": [f"not overlapping {_listed(c.VNET_FORBIDDEN_RANGES)}"],
        "hubSshPublicKey": [f"`ssh-rsa`, at least {c.MIN_RSA_BITS} bits"],
        "sshPrivateKey": [f"RSA, at least {c.MIN_RSA_BITS} bits, no passphrase, the pair of hubSshPublicKey"],
        "hubAdminUsername": [f"not one of the {len(naming.RESERVED_ADMIN_NAMES)} names Azure reserves"],
        "hubSshSourceCidrs": ["CIDRs; everywhere refused unless hubAllowSshFromAnywhere (rules above)"],
        "hubImageVersion": [f"matches `{c._IMAGE_VERSION.pattern}`"],
        "hubImageSku": ["not empty, not a generation 2 image (`...gen2`)"],
        "sshHostKeyFingerprint": [f"matches `{c._FINGERPRINT.pattern}`"],
        "computeResourceId": [f"a VM's resource id, matching `{c._VM_RESOURCE_ID.pattern}`"],
    }


def _default(spec: Mapping[str, Any]) -> str:
    if "default" not in spec:
        return "**required**"
    value = spec["default"]
    if value == "" or value == []:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def config_reference() -> str:
    """Every key Pulumi.yaml declares, by section: type, default, its description, and what the
    program checks before it declares anything."""
    import yaml

    text = PROJECT_FILE.read_text(encoding="utf-8")
    declared: Mapping[str, Mapping[str, Any]] = yaml.safe_load(text)["config"]
    sections = _sections(text)
    checks = config_checks()
    for key, more in _constant_checks().items():
        checks.setdefault(key, []).extend(more)
    unknown = set(checks) - set(declared)
    if unknown:
        raise ValueError(f"components/config.py checks keys Pulumi.yaml does not declare: {sorted(unknown)}")
    out: list[str] = []
    for section in dict.fromkeys(sections[k] for k in declared):
        rows = []
        for key in (k for k in declared if sections[k] == section):
            spec = declared[key]
            kind = spec["type"] + (", secret" if spec.get("secret") else "")
            checked = "; ".join(checks.get(key, [])) or "its type (the description says the rest)"
            if "default" not in spec:
                checked = "set and not empty; " + checked if checks.get(key) else "set and not empty"
            rows.append((f"`{key}` ({kind})", _default(spec), spec.get("description", ""), checked))
        out += [f"### {section}", "", _table(("key", "default", "what it is", "checked before deploying"), rows), ""]
    return "\n".join(out)


# --- API versions ---------------------------------------------------------------------------------


def hub_api_versions() -> str:
    """The versions every request to the Hub goes out at, from where the code pins them."""
    from clients.cloud import METADATA_API_VERSION
    from providers.hub_arm_resource import HUB_API_VERSIONS, HUB_PROFILE
    from training.src.edge_train.credentials import HUB_BLOB_API_VERSION

    rows = [("Resource Manager metadata (`/metadata/endpoints`)", METADATA_API_VERSION, "`clients/cloud.py`")]
    rows += [
        (f"`{namespace}`", version, f"profile {HUB_PROFILE}, `providers/hub_arm_resource.py`")
        for namespace, version in HUB_API_VERSIONS.items()
    ]
    rows.append(
        ("Blob storage data plane (`x-ms-version`)", HUB_BLOB_API_VERSION, "`training/src/edge_train/credentials.py`")
    )
    return _table(("what", "API version", "pinned in"), rows)


_SDK_VERSION = re.compile(r"Uses Azure REST API version (\S+?)\.")
_TYPED_RESOURCE = re.compile(r"\b([a-z]+)\.([A-Z][A-Za-z]+)\(")


def _typed_resources() -> list[tuple[str, str, str]]:
    """(module, class, API version) of every typed azure-native resource the components declare;
    the version is the one the pinned SDK sends, as its class documents it."""
    found = set()
    for path in sorted(COMPONENTS.glob("*.py")):
        for module, name in _TYPED_RESOURCE.findall(path.read_text(encoding="utf-8")):
            # resources.Resource is generic: each one states its own version (the rows above).
            if name.endswith("Args") or module == "pulumi" or (module, name) == ("resources", "Resource"):
                continue
            try:
                cls = getattr(importlib.import_module(f"pulumi_azure_native.{module}"), name)
            except (ImportError, AttributeError):
                continue
            # The version is in the docstring of __init__'s overloads, so in the source, not __doc__.
            match = _SDK_VERSION.search(inspect.getsource(cls))
            if match:
                found.add((module, name, match.group(1)))
    return sorted(found)


def pinned_versions() -> str:
    """The cloud side's API versions and the edge's software versions, from the code."""
    from importlib.metadata import version

    from components.azureml_computes import API_VERSION as AZUREML_API_VERSION
    from edge import first_boot
    from providers.arc_connection import CONNECTED_CLUSTER_API_VERSION
    from training.image_build import TASKS_API_VERSION
    from training.jobs import BASE_IMAGE

    sdk = f"pulumi-azure-native {version('pulumi-azure-native')}"
    rows = [
        ("Azure ML computes (attach, read, detach)", AZUREML_API_VERSION, "`components/azureml_computes.py`"),
        (
            "`Microsoft.Kubernetes/connectedClusters` (generic resource and the wait)",
            CONNECTED_CLUSTER_API_VERSION,
            "`providers/arc_connection.py`",
        ),
        ("ACR Tasks (`package`)", TASKS_API_VERSION, "`training/image_build.py`"),
    ]
    rows += [(f"`{m}.{n}`", v, sdk) for m, n, v in _typed_resources()]
    software = [
        ("K3s", first_boot.K3S_VERSION, "`edge/first_boot.py`"),
        ("Helm", first_boot.HELM_VERSION, "`edge/first_boot.py`"),
        ("Azure Arc agents chart", first_boot.ARC_CHART_VERSION, "`edge/first_boot.py`"),
        ("job base image", BASE_IMAGE, "`training/jobs.py`"),
    ]
    return "\n".join(
        [
            _table(("cloud side", "API version", "pinned in"), rows),
            "",
            _table(("on the edge and in jobs", "version", "pinned in"), software),
        ]
    )


# --- the training CLI's input limits --------------------------------------------------------------


def cli_limits() -> str:
    """The training CLI's limits that are constants of its code."""
    from training import jobs, local
    from training.src.edge_train import location

    mib = jobs.MAX_CODE_FILE_BYTES // (1024 * 1024)
    rows = [
        (
            "`hub://<container>/<prefix>`",
            "container: 3-63 lowercase letters, digits and single hyphens (Azure's rule); prefix: a folder, "
            "normalised (`a//b/./c` is `a/b/c/`), no `..`, no leading `/`, no backslash or control character, "
            f"at most {location.MAX_PREFIX:,} characters",
        ),
        ("`run --local --rows`", f"{local.MIN_ROWS:,} to {local.MAX_ROWS:,}"),
        (
            "a job's code folder",
            f"no file over {mib} MiB and none ending {', '.join(f'`{s}`' for s in jobs.DATA_SUFFIXES)}",
        ),
        ("a job's inputs", f"remote stores only: {_listed(s + ':' for s in jobs.REMOTE_SCHEMES)}, and `hub://`"),
        ("a job's run time", f"{jobs.DEFAULT_TIMEOUT_SECONDS // 3600} hours (the job's `limits.timeout`)"),
    ]
    return _table(("input", "accepted"), rows)
