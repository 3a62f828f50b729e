"""Every workload this project puts on a cluster, held to the Pod Security Standards' "restricted"
profile, rule by rule as the Kubernetes documentation writes them:
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the Baseline controls, which
Restricted includes, and the Restricted ones). Plus this project's own rule, a read-only root
filesystem. A workload that cannot meet a rule names it here with the reason, and nothing more.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edge import cluster_manifests, serving_manifests
from edge.cluster_manifests import InstanceTypeSpec

# Baseline "Volume Types" forbids hostPath; Restricted allows only these.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Baseline "Sysctls": the safe set.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def violations(pod: dict[str, Any]) -> set[str]:
    """The rules of "restricted" (and read-only root) that a pod spec breaks, as short names."""
    found: set[str] = set()
    pod_context = pod.get("securityContext") or {}
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    # Baseline: host namespaces, HostProcess, sysctls, SELinux, AppArmor, seccomp not Unconfined.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.add(field)
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.add(f"sysctl {sysctl.get('name')}")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.add(f"hostPath volume {volume['name']}")
        elif not kinds <= RESTRICTED_VOLUMES:
            found.add(f"volume type {sorted(kinds)}")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for container in containers:
        context = container.get("securityContext") or {}
        name = container.get("name")
        merged = {**pod_context, **context}
        if (merged.get("windowsOptions") or {}).get("hostProcess"):
            found.add(f"{name}: hostProcess")
        if context.get("privileged"):
            found.add(f"{name}: privileged")
        if context.get("procMount", "Default") != "Default":
            found.add(f"{name}: procMount")
        selinux = merged.get("seLinuxOptions") or {}
        if selinux.get("type") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.add(f"{name}: seLinuxOptions")
        if (merged.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.add(f"{name}: AppArmor Unconfined")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.add(f"{name}: hostPort")
        # Restricted.
        if context.get("allowPrivilegeEscalation") is not False:
            found.add(f"{name}: allowPrivilegeEscalation")
        if merged.get("runAsNonRoot") is not True:
            found.add(f"{name}: runAsNonRoot")
        if merged.get("runAsUser") == 0:
            found.add(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.add(f"{name}: seccompProfile")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.add(f"{name}: capabilities not dropped")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.add(f"{name}: capabilities added")
        # This project's rule (the list): nothing writable but declared volumes.
        if context.get("readOnlyRootFilesystem") is not True:
            found.add(f"{name}: readOnlyRootFilesystem")
    return found


def _pod_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    kind = manifest["kind"]
    if kind == "Pod":
        return manifest["spec"]
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return manifest["spec"]["template"]["spec"]
    if kind == "CronJob":
        return manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    cluster = cluster_manifests.cluster_manifests(
        "edge-training",
        [InstanceTypeSpec("small", "500m", "2Gi", "2", "6Gi"), InstanceTypeSpec("gpu", "1", "8Gi", "4", "24Gi", gpu=1)],
    )
    release = serving_manifests.ServingRelease(
        app="churn",
        image="crdev.azurecr.io/churn@sha256:" + "a" * 64,
        registry="crdev.azurecr.io",
        token_name="pull",
        token_password="not-a-real-password",
    )
    # The same server trusting the Hub's CA: its ConfigMap volume must keep it "restricted".
    with_ca = dataclasses.replace(
        release, app="churn-hub-ca", hub_ca="-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"
    )
    found = []
    for manifest in [*cluster, *serving_manifests.manifests(release), *serving_manifests.manifests(with_ca)]:
        spec = _pod_spec(manifest)
        if spec is not None:
            found.append((f"{manifest['kind']}/{manifest['metadata']['name']}", spec))
    return found


WORKLOADS = _workloads()
EXCEPTIONS = {
    # Writes root-owned 0600 copies of the Secret into a root-owned directory on the node's disk
    # (edge/cluster_manifests.py): that needs root and the hostPath; everything else is restricted.
    "DaemonSet/credential-copier": {"copy: runAsNonRoot", "copy: runAsUser 0", "hostPath volume credential"},
}


def test_every_workload_is_found() -> None:
    assert sorted(name for name, _ in WORKLOADS) == [
        "DaemonSet/credential-copier",
        "Deployment/churn",
        "Deployment/churn-hub-ca",
    ]
    [with_ca] = [pod for name, pod in WORKLOADS if name == "Deployment/churn-hub-ca"]
    assert {"name": "hub-ca", "configMap": {"name": "churn-hub-ca-hub-ca", "defaultMode": 0o444,
            "items": [{"key": "hub-ca.pem", "path": "hub-ca.pem"}]}} in with_ca["volumes"]  # fmt: skip


@pytest.mark.parametrize(("name", "pod"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_every_workload_meets_restricted_but_for_its_named_exceptions(name: str, pod: dict[str, Any]) -> None:
    assert violations(pod) == EXCEPTIONS.get(name, set())


RESTRICTED_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def _with(change: dict[str, Any], container: dict[str, Any] | None = None) -> dict[str, Any]:
    pod = {**RESTRICTED_POD, **change}
    if container is not None:
        base = RESTRICTED_POD["containers"][0]
        pod["containers"] = [{**base, "securityContext": {**base["securityContext"], **container}}]
    return pod


@pytest.mark.parametrize(
    ("pod", "rule"),
    [
        (_with({}, {"privileged": True}), "c: privileged"),
        (_with({"hostNetwork": True}), "hostNetwork"),
        (_with({"hostPID": True}), "hostPID"),
        (_with({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}), "hostPath volume h"),
        (_with({"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}), "volume type ['nfs']"),
        (_with({}, {"allowPrivilegeEscalation": True}), "c: allowPrivilegeEscalation"),
        (_with({}, {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}), "c: capabilities added"),
        (_with({}, {"capabilities": {}}), "c: capabilities not dropped"),
        (_with({}, {"runAsUser": 0}), "c: runAsUser 0"),
        (
            _with({"securityContext": {"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}}),
            "c: runAsNonRoot",
        ),
        (_with({"securityContext": {"runAsNonRoot": True}}), "c: seccompProfile"),
        (_with({}, {"seccompProfile": {"type": "Unconfined"}}), "c: seccompProfile"),
        (_with({}, {"readOnlyRootFilesystem": False}), "c: readOnlyRootFilesystem"),
        (
            _with(
                {
                    "securityContext": {
                        **RESTRICTED_POD["securityContext"],
                        "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                    }
                }
            ),
            "sysctl kernel.msgmax",
        ),
    ],
)
def test_the_checker_catches_each_rule(pod: dict[str, Any], rule: str) -> None:
    assert violations(RESTRICTED_POD) == set()
    assert rule in violations(pod)


# The Baseline controls among the checker's names; everything else it reports is Restricted-only.
BASELINE_RULES = ("hostNetwork", "hostPID", "hostIPC", "sysctl", "hostPath", "volume type", "hostProcess",
                  "privileged", "procMount", "seLinuxOptions", "AppArmor", "hostPort")  # fmt: skip


def _level(found: set[str]) -> str:
    """The strictest Pod Security level a pod with these violations is admitted at."""
    if any(rule in v for v in found for rule in BASELINE_RULES):
        return "privileged"
    return "baseline" if found - {v for v in found if v.endswith("readOnlyRootFilesystem")} else "restricted"


def test_the_compute_namespace_enforces_the_strictest_level_its_workloads_allow_and_warns_at_restricted() -> None:
    """Enforced any stricter, the API server would refuse our own DaemonSet; any looser, and a
    workload of ours could slip below what it meets today unseen. Whatever the enforce level, every
    pod below "restricted" is warned about on apply and audited."""
    small = InstanceTypeSpec("small", "1", "1Gi", "1", "1Gi")
    manifests = cluster_manifests.cluster_manifests("edge-training", [small])
    [namespace] = [m for m in manifests if m["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    ours = [spec for m in manifests if (spec := _pod_spec(m)) is not None]
    order = ["privileged", "baseline", "restricted"]
    strictest = min((_level(violations(pod)) for pod in ours), key=order.index)
    assert labels["pod-security.kubernetes.io/enforce"] == strictest == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize(
    ("pod", "level"),
    [(RESTRICTED_POD, "restricted"),
     (_with({}, {"allowPrivilegeEscalation": True}), "baseline"),
     (_with({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}), "privileged")],
    ids=["restricted", "baseline", "privileged"],
)  # fmt: skip
def test_the_level_of_a_pod_is_judged_by_the_rules_it_breaks(pod: dict[str, Any], level: str) -> None:
    assert _level(violations(pod)) == level
