"""The cloud side of the Kubernetes edge mode: the Hub VM's K3s cluster as an Arc-enabled
connected cluster, the Azure ML extension on it, and a Kubernetes compute in the workspace.

Order, each step depending on the one before (the arrows are `depends_on`):
connected cluster -> wait for Connected -> Azure ML extension -> the workspace identity's roles ->
Kubernetes compute -> the compute identity's roles. The Hub VM boots after the connected cluster
exists (its Arc agents onboard to it) and the wait depends on the VMs.

API versions (pulumi-azure-native 3.29.0 ships no versioned modules, so the typed classes send
their defaults):
- Microsoft.Kubernetes/connectedClusters: the typed class sends 2024-02-01-preview. A preview is
  not what a production cluster should rest on, so the cluster is a generic resource at the
  stable 2026-05-01, the version Microsoft's azure-mgmt-hybridkubernetes 2.0.0 models (the tests
  check the body against them). Body as `az connectedk8s connect` sends it (Azure/
  azure-cli-extensions, src/connectedk8s/azext_connectedk8s/custom.py `generate_request_payload`).
- Microsoft.KubernetesConfiguration/extensions: typed, stable 2023-05-01.
- Microsoft.MachineLearningServices computes: typed, stable 2025-12-01 (azure-ai-ml 1.35's own).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import authorization, kubernetesconfiguration, machinelearningservices, relay, resources

from components import naming
from components.config import DayTwoSettings, EdgeComputeSettings, InstanceTypeSizing
from components.roles import assign_role
from edge.real_edge import EdgeNetwork
from providers.arc_connection import CONNECTED_CLUSTER_API_VERSION, ArcConnection, ArcConnectionArgs
from providers.cluster_secrets import ClusterSecrets

DISTRIBUTION = "k3s"
INFRASTRUCTURE = "azure_stack_hub"  # the CLI's name for it (connectedk8s _constants.py)
EXTENSION_NAME = "azureml"
EXTENSION_TYPE = "Microsoft.AzureML.Kubernetes"
EXTENSION_RELEASE_NAMESPACE = "azureml"  # the CLI forces it (AzureMLKubernetes.py, Create)
RELAY_AUTH_RULE = "azureml_rw"  # the rule the CLI creates and the extension's relayserver uses

# Built-in role definition ids (Microsoft Learn, "Azure built-in roles").
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
KUBERNETES_EXTENSION_CONTRIBUTOR = "85cb6faf-e071-4c9b-8136-154b5a04f717"
AKS_CLUSTER_ADMIN = "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8"
AZURE_RELAY_OWNER = "2787bf04-f1f5-4bfe-8383-c8a24483ee38"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"

# What the workspace identity needs to attach an Arc cluster, and the compute identity to run jobs
# (MicrosoftDocs/azure-ai-docs, articles/machine-learning/how-to-attach-kubernetes-to-workspace.md:
# Reader, Kubernetes Extension Contributor and Azure Kubernetes Service Cluster Admin Role on the
# cluster, Azure Relay Owner on the relay; AcrPull on the registry and Storage Blob Data
# Contributor on the workspace storage for the compute's identity). The docs require them for a
# user-assigned workspace identity; they are given explicitly here as for every other workspace
# role (components/ml_workspace.py), not left to the service.
WORKSPACE_ROLES_ON_CLUSTER = (READER, KUBERNETES_EXTENSION_CONTRIBUTOR, AKS_CLUSTER_ADMIN)
WORKSPACE_ROLES_ON_RELAY = (AZURE_RELAY_OWNER,)
COMPUTE_ROLES = {"registry": (ACR_PULL,), "storage": (STORAGE_BLOB_DATA_CONTRIBUTOR,)}

_NAME_CHARS = re.compile(r"[^a-zA-Z0-9-]")


def cluster_name(stack: str) -> str:
    """connectedClusters names: 1-63 letters, digits, hyphens and underscores, alphanumeric ends."""
    core = _NAME_CHARS.sub("-", stack).strip("-") or "stack"
    return f"arc-edge-{core}"[:63].rstrip("-")


def relay_namespace_name(cluster: str, subscription_id: str, resource_group: str) -> str:
    """The relay namespace name the CLI derives, so `az k8s-extension update` finds ours: the
    letters and digits of "<cluster>-<subscription>-<group>-relay", cut to 44 plus 6 hex of its
    MD5 when longer than 50 (AzureMLKubernetes.py `_get_valid_name(..., suffix_len=6, max_len=50)`)."""
    source = f"{cluster}-{subscription_id}-{resource_group}-relay"
    letters = "".join(c for c in source if c.isalnum())
    if len(letters) <= 50:
        return letters
    return letters[:44] + hashlib.md5(source.encode(), usedforsecurity=False).hexdigest()[:6]


def extension_settings(
    cluster_id: str,
    cluster: str,
    location: str,
    node_count: int,
    hybrid_connection_id: str,
    hybrid_connection: str,
    gpus: int = 0,
) -> dict[str, str]:
    """The configurationSettings `az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes
    --cluster-type connectedClusters --config enableTraining=True` sends (Azure/azure-cli-extensions,
    src/k8s-extension/azext_k8s_extension/partner_extensions/AzureMLKubernetes.py, `Create` and
    `__create_required_resource`), values as the strings the service receives."""
    settings = {
        "enableTraining": "True",
        "enableInference": "False",
        # Defaults the CLI fills in client-side; the extension breaks without them (terraform-
        # provider-azurerm issue 24547).
        "cluster_name": cluster_id,
        "clusterId": cluster_id,
        "prometheus.prometheusSpec.externalLabels.cluster_name": cluster_id,
        "domain": f"{location}.cloudapp.azure.com",
        "location": location,
        "jobSchedulerLocation": location,
        "cluster_name_friendly": cluster,
        "servicebus.enabled": "false",
        # Arc clusters talk to Azure ML through Azure Relay; no ingress for training.
        "relayserver.enabled": "true",
        "nginxIngress.enabled": "false",
        "relayserver.hybridConnectionResourceID": hybrid_connection_id,
        "relayserver.hybridConnectionName": hybrid_connection,
        # Said either way: Microsoft's settings table says "By default, Azure Machine Learning
        # extension deployment won't install NVIDIA Device Plugin" (azure-ai-docs,
        # how-to-deploy-kubernetes-extension.md), older versions of it said the opposite. On a GPU
        # stack the plugin advertises nvidia.com/gpu, which the GPU instance type requests; it runs
        # on containerd's default runtime, which the first boot makes NVIDIA's.
        "installNvidiaDevicePlugin": "True" if gpus else "False",
    }
    if node_count < 3:  # the CLI's small-cluster defaults (totalNodeCount < 3)
        settings["clusterPurpose"] = "DevTest"
        settings["inferenceRouterHA"] = "false"
    return settings


def compute_instance_type(sizing: InstanceTypeSizing) -> machinelearningservices.InstanceTypeSchemaArgs:
    """An instance type as the Kubernetes compute lists it: requests = limits, GPUs in limits
    (as the cluster's InstanceType has them, edge/cluster_manifests.py)."""
    limits = {"cpu": sizing.cpu, "memory": sizing.memory}
    if sizing.gpus:
        limits["nvidia.com/gpu"] = str(sizing.gpus)
    return machinelearningservices.InstanceTypeSchemaArgs(
        resources=machinelearningservices.InstanceTypeSchemaResourcesArgs(
            requests={"cpu": sizing.cpu, "memory": sizing.memory}, limits=limits
        )
    )


K3S_API_PORT = 6443


def k3s_server_url(stack: str) -> str:
    """Where agents join: the server VM by its computer name, which Azure Stack Hub's internal DNS
    (iDNS) resolves inside the virtual network, so no address is hard-coded."""
    return f"https://{naming.hub_resource_name('vm', stack)}:{K3S_API_PORT}"


def agent_kind(index: int) -> str:
    """The `HubVm` kind of agent `index` (1-based): its VM, computer and K3s node name derive from it."""
    return f"vm-agent{index}"


def agent_node_names(stack: str, count: int) -> tuple[str, ...]:
    """The node names the agents register under: K3s takes the host name, the VM's computer name."""
    return tuple(naming.hub_resource_name(agent_kind(i), stack).lower() for i in range(1, count + 1))


@dataclass(frozen=True)
class EdgeKubernetesArgs:
    settings: EdgeComputeSettings
    stack: str
    compute_name: str
    subscription_id: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    location: str
    workspace_name: pulumi.Input[str]
    workspace_principal_id: pulumi.Input[str]
    registry_id: pulumi.Input[str]
    storage_account_id: pulumi.Input[str]
    tags: Mapping[str, str]
    provider: azure_native.Provider
    deadline_seconds: int = 1800
    day_two: DayTwoSettings | None = None
    """Versions and rotation (k3sVersion, the Arc agents' and the extension's policies); None:
    the defaults of a stack that sets none of them."""


def arc_agent_profile(day_two: DayTwoSettings | None) -> dict[str, str]:
    """`arcAgentProfile` of the connected cluster: auto-upgrade on, as `az connectedk8s connect`
    leaves it; off with the pinned version only on purpose (arcAgentAutoUpgrade false). Both
    fields are writable on create and update (azure-mgmt-hybridkubernetes 2.0.0, ArcAgentProfile)."""
    if day_two is None or day_two.arc_agent_auto_upgrade:
        return {"agentAutoUpgrade": "Enabled"}
    from edge.first_boot import ARC_CHART_VERSION

    return {"agentAutoUpgrade": "Disabled", "desiredAgentVersion": day_two.arc_agent_version or ARC_CHART_VERSION}


def extension_version_policy(day_two: DayTwoSettings | None) -> dict[str, object]:
    """The extension follows the stable train's minor versions unless a version is pinned; the
    service takes `version` only with autoUpgradeMinorVersion false (Microsoft.KubernetesConfiguration
    2023-05-01, Extension.version: "To use 'version', autoUpgradeMinorVersion must be 'false'")."""
    if day_two is None or day_two.extension_version is None:
        return {"release_train": "stable", "auto_upgrade_minor_version": True}
    return {"release_train": "stable", "auto_upgrade_minor_version": False, "version": day_two.extension_version}


class EdgeKubernetes(pulumi.ComponentResource):
    """Connected cluster, wait, relay, Azure ML extension, roles and the Kubernetes compute.

    Two-phase: the constructor declares the cluster and its secrets (the Hub VMs need them for
    their first boot); `attach(nodes)` declares everything that needs the cluster Connected,
    depending on the VMs that run it."""

    cluster: resources.Resource
    """The connected cluster; the Hub VMs depend on it (their agents onboard to it)."""
    cluster_id: pulumi.Output[str]
    cluster_name: pulumi.Output[str]
    onboarding_private_key: pulumi.Output[str]
    join_token: pulumi.Output[str]
    tenant_id: pulumi.Output[str]
    compute_id: pulumi.Output[str]
    compute_name: pulumi.Output[str]
    """These two, and the registered outputs, exist once `attach` ran."""

    def __init__(self, name: str, args: EdgeKubernetesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:cloud:EdgeKubernetes", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        client = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self, provider=args.provider)
        )
        self._subscription = pulumi.Output.from_input(args.subscription_id)
        self.tenant_id = client.tenant_id
        secrets = ClusterSecrets(
            f"{name}-secrets",
            onboarding_key_rotation=args.day_two.onboarding_key_rotation if args.day_two else 0,
            join_token_rotation=args.day_two.join_token_rotation if args.day_two else 0,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.onboarding_private_key = secrets.onboarding_private_key
        self.join_token = secrets.join_token

        self._cluster_name = cluster_name(args.stack)
        self._cluster = resources.Resource(
            f"{name}-cluster",
            resource_provider_namespace="Microsoft.Kubernetes",
            resource_type="connectedClusters",
            parent_resource_path="",
            resource_name_=self._cluster_name,
            resource_group_name=args.resource_group_name,
            api_version=CONNECTED_CLUSTER_API_VERSION,
            location=args.location,
            identity=resources.IdentityArgs(type=resources.ResourceIdentityType.SYSTEM_ASSIGNED),
            properties={
                "agentPublicKeyCertificate": secrets.agent_public_key_certificate,
                "distribution": DISTRIBUTION,
                "infrastructure": INFRASTRUCTURE,
                "arcAgentProfile": arc_agent_profile(args.day_two),
            },
            tags=dict(args.tags),
            opts=self._child,
        )
        self.cluster = self._cluster
        self.cluster_id = self._cluster.id
        self.cluster_name = pulumi.Output.from_input(self._cluster_name)

    def server_script(
        self,
        admin_username: str,
        docker_version: str,
        namespace: str,
        instance: InstanceTypeSizing,
        gpu_instance: InstanceTypeSizing | None = None,
        network: EdgeNetwork | None = None,
    ) -> pulumi.Output[str]:
        """The K3s server's first-boot script (edge/first_boot.py), carrying the onboarding key and
        the join token: rendered inside an apply of secret Outputs, and secret itself. With
        `gpu_instance` (a GPU stack), its GPUs are the node's: the first boot installs and checks them."""
        from edge import cluster_manifests
        from edge import first_boot as edge_boot

        instances = [instance, *([gpu_instance] if gpu_instance is not None else [])]
        gpus = gpu_instance.gpus if gpu_instance is not None else 0
        manifests = cluster_manifests.to_yaml(
            cluster_manifests.cluster_manifests(
                namespace,
                [
                    cluster_manifests.InstanceTypeSpec(
                        name=i.name,
                        cpu_request=i.cpu,
                        memory_request=i.memory,
                        cpu_limit=i.cpu,
                        memory_limit=i.memory,
                        gpu=i.gpus,
                    )
                    for i in instances
                ],
            )
        )
        location, cluster = self._args.location, self._cluster_name
        day_two = self._args.day_two
        auto = day_two is None or day_two.arc_agent_auto_upgrade
        chart = (day_two.arc_agent_version if day_two else None) or edge_boot.ARC_CHART_VERSION
        k3s = day_two.k3s if day_two else None
        agent_nodes = agent_node_names(self._args.stack, self._args.settings.agent_count)

        def render(values: list[str]) -> str:
            subscription, tenant, group, key, token, _cluster_id = values
            arc = edge_boot.ArcOnboarding(
                subscription_id=subscription,
                tenant_id=tenant,
                resource_group=group,
                cluster_name=cluster,
                location=location,
                private_key_pem=key,
                auto_upgrade=auto,
                chart_version=chart,
            )
            server = edge_boot.K3sServer(join_token=token, arc=arc, manifests_yaml=manifests, agent_nodes=agent_nodes)
            return edge_boot.render_script(
                admin_username, docker_version, server=server, gpus=gpus, network=network, k3s=k3s
            )

        values = pulumi.Output.all(
            self._subscription,
            self.tenant_id,
            self._args.resource_group_name,
            self.onboarding_private_key,
            self.join_token,
            # Not rendered, but waited for: the agents onboard to a cluster that must exist in Azure.
            self.cluster_id,
        )
        return pulumi.Output.secret(values.apply(render))

    def agent_script(
        self, admin_username: str, docker_version: str, gpus: int = 0, network: EdgeNetwork | None = None
    ) -> pulumi.Output[str]:
        """A K3s agent's first-boot script: joins the server with the token; no Arc onboarding."""
        from edge import first_boot as edge_boot

        url = k3s_server_url(self._args.stack)
        k3s = self._args.day_two.k3s if self._args.day_two else None
        return pulumi.Output.secret(
            self.join_token.apply(
                lambda token: edge_boot.render_script(
                    admin_username,
                    docker_version,
                    agent=edge_boot.K3sAgent(server_url=url, join_token=token),
                    gpus=gpus,
                    network=network,
                    k3s=k3s,
                )
            )
        )

    def attach(self, nodes: list[pulumi.Resource]) -> None:
        """Wait for the cluster (run by `nodes`), then the extension, roles and compute."""
        name, args, child = self._name, self._args, self._child
        s = args.settings
        wait = ArcConnection(
            f"{name}-connected",
            ArcConnectionArgs(
                subscription_id=self._subscription,
                resource_group_name=args.resource_group_name,
                cluster_name=self._cluster_name,
                location=args.location,
                deadline_seconds=args.deadline_seconds,
                k3s_version=args.day_two.k3s.version if args.day_two else None,
                extension_name=EXTENSION_NAME,
            ),
            pulumi.ResourceOptions(parent=self, depends_on=[self._cluster, *nodes]),
        )

        # Azure Relay, as the CLI makes it for an Arc cluster: a namespace, a hybrid connection
        # named after the cluster that requires client authorization, and the azureml_rw rule.
        namespace_name = pulumi.Output.all(self._subscription, args.resource_group_name).apply(
            lambda v: relay_namespace_name(self._cluster_name, v[0], v[1])
        )
        relay_namespace = relay.Namespace(
            f"{name}-relay",
            namespace_name=namespace_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=relay.SkuArgs(name=relay.SkuName.STANDARD, tier=relay.SkuTier.STANDARD),
            tags=dict(args.tags),
            opts=child,
        )
        hybrid_connection = relay.HybridConnection(
            f"{name}-hc",
            hybrid_connection_name=self._cluster_name,
            namespace_name=relay_namespace.name,
            resource_group_name=args.resource_group_name,
            requires_client_authorization=True,
            opts=child,
        )
        rule = relay.HybridConnectionAuthorizationRule(
            f"{name}-hc-rule",
            authorization_rule_name=RELAY_AUTH_RULE,
            hybrid_connection_name=hybrid_connection.name,
            namespace_name=relay_namespace.name,
            resource_group_name=args.resource_group_name,
            rights=[relay.AccessRights.MANAGE, relay.AccessRights.SEND, relay.AccessRights.LISTEN],
            opts=child,
        )
        keys = relay.list_hybrid_connection_keys_output(
            authorization_rule_name=rule.name,
            hybrid_connection_name=hybrid_connection.name,
            namespace_name=relay_namespace.name,
            resource_group_name=args.resource_group_name,
            opts=pulumi.InvokeOutputOptions(parent=self, provider=args.provider, depends_on=[rule]),
        )
        connection_string = pulumi.Output.secret(keys.primary_connection_string)

        settings = pulumi.Output.all(self._cluster.id, hybrid_connection.id).apply(
            lambda v: extension_settings(
                v[0], self._cluster_name, args.location, 1 + s.agent_count, v[1], self._cluster_name, s.gpus
            )
        )
        extension = kubernetesconfiguration.Extension(
            f"{name}-azureml",
            cluster_rp="Microsoft.Kubernetes",
            cluster_resource_name="connectedClusters",
            cluster_name=self._cluster_name,
            resource_group_name=args.resource_group_name,
            extension_name=EXTENSION_NAME,
            extension_type=EXTENSION_TYPE,
            **extension_version_policy(args.day_two),
            scope=kubernetesconfiguration.ScopeArgs(
                cluster=kubernetesconfiguration.ScopeClusterArgs(release_namespace=EXTENSION_RELEASE_NAMESPACE)
            ),
            identity=kubernetesconfiguration.IdentityArgs(
                type=kubernetesconfiguration.ResourceIdentityType.SYSTEM_ASSIGNED
            ),
            configuration_settings=settings,
            # The CLI sends the connection string under both names (its reference mapping).
            configuration_protected_settings=connection_string.apply(
                lambda c: {"relayServerConnectionString": c, "relayserver.relayConnectionString": c}
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[wait, rule])),
        )

        principal = pulumi.Output.from_input(args.workspace_principal_id)
        scopes = [(self._cluster.id, role, "cluster") for role in WORKSPACE_ROLES_ON_CLUSTER] + [
            (relay_namespace.id, role, "relay") for role in WORKSPACE_ROLES_ON_RELAY
        ]
        roles = [
            self._role(f"{name}-ws-{target}-{role[:8]}", scope, role, principal, [extension])
            for scope, role, target in scopes
        ]

        t = s.instance_type
        compute = machinelearningservices.Compute(
            f"{name}-compute",
            compute_name=args.compute_name,
            workspace_name=args.workspace_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            identity=machinelearningservices.ManagedServiceIdentityArgs(
                type=machinelearningservices.ManagedServiceIdentityType.SYSTEM_ASSIGNED
            ),
            properties=machinelearningservices.KubernetesArgs(
                compute_type="Kubernetes",
                resource_id=self._cluster.id,
                description="K3s on Azure Stack Hub, Arc-enabled, attached by edge-training",
                properties=machinelearningservices.KubernetesPropertiesArgs(
                    namespace=s.namespace,
                    default_instance_type=t.name,
                    instance_types={i.name: compute_instance_type(i) for i in s.instance_types},
                ),
            ),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[extension, *roles])),
        )
        compute_principal = compute.identity.apply(lambda i: i.principal_id if i else None)
        compute_scopes = {"registry": args.registry_id, "storage": args.storage_account_id}
        for target, role_ids in COMPUTE_ROLES.items():
            for role in role_ids:
                self._role(f"{name}-compute-{target}-{role[:8]}", compute_scopes[target], role, compute_principal, [])

        self.compute_id = compute.id
        self.compute_name = compute.name
        self.connectivity_status = wait.connectivity_status
        self.register_outputs(
            {
                "clusterId": self.cluster_id,
                "clusterName": self.cluster_name,
                "computeId": self.compute_id,
                "computeName": self.compute_name,
                "extensionId": extension.id,
                "connectivityStatus": self.connectivity_status,
                "instanceTypes": [i.name for i in s.instance_types],
                "gpusPerNode": s.gpus,
            }
        )

    def _role(
        self,
        logical: str,
        scope: pulumi.Input[str],
        role: str,
        principal: pulumi.Input[str | None],
        after: list[pulumi.Resource],
    ) -> authorization.RoleAssignment:
        return assign_role(
            logical,
            scope,
            role,
            principal,
            self._subscription,
            pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(depends_on=after)),
        )
