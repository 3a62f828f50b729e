"""edge-training: train where the data lives.

Reads like the pattern: the cloud side (Azure ML workspace and registry), the edge side (storage
and a Docker VM on Azure Stack Hub), the attach step joining them, and the outputs the training
CLI consumes.
"""

from __future__ import annotations

import pulumi

from components.azure_provider import azure_provider
from components.config import from_pulumi
from components.edge_compute import EdgeCompute, EdgeComputeArgs
from components.hub_network import HubNetwork, HubNetworkArgs
from components.hub_provider import hub_provider
from components.hub_storage import HubStorage, HubStorageArgs
from components.hub_vm import HubVm, HubVmArgs
from components.ml_workspace import MlWorkspace, MlWorkspaceArgs
from components.registry_pull_token import RegistryPullToken, RegistryPullTokenArgs

config = from_pulumi()  # validates every key; raises ConfigError before any resource exists

# 1. Cloud side: Azure ML workspace, its storage, key vault, App Insights, our registry.
azure = azure_provider(config.azure)
cloud = MlWorkspace("cloud", MlWorkspaceArgs(config.azure, config.tags, azure))
# The Hub pulls model images with a token scoped to the model's repository, not the admin user.
pull_token = RegistryPullToken("edge", RegistryPullTokenArgs(cloud.resource_group_name, cloud.registry_name, azure))

# 2. Edge side: Hub storage for the private data, and an Ubuntu VM with Docker.
hub = hub_provider(config.hub)
hub_storage = HubStorage("hub-storage", HubStorageArgs(config.hub, config.tags, hub))
network = HubNetwork("hub-network", HubNetworkArgs(config.hub, config.stack, config.tags, hub))
vm = HubVm("hub-vm", HubVmArgs(config.hub, config.stack, network.nic_id, config.tags, hub))

# 3. Attach: preflight the VM over SSH and attach it to the workspace as compute.
compute = EdgeCompute(
    "edge-compute",
    EdgeComputeArgs(
        subscription_id=cloud.subscription_id,
        resource_group_name=cloud.resource_group_name,
        workspace_name=cloud.workspace_name,
        location=cloud.location,
        compute_name=config.attach.compute_name,
        address=network.public_ip_address,
        ssh_port=config.attach.ssh_port,
        admin_username=vm.admin_username,
        private_key=pulumi.Output.secret(config.attach.ssh_private_key),
        first_boot_marker=vm.first_boot_marker,
        expected_host_key_fingerprint=config.attach.ssh_host_key_fingerprint,
        deadline_seconds=config.attach.deadline_seconds,
        min_free_disk_gb=config.attach.min_free_disk_gb,
        resource_id=config.attach.compute_resource_id,
    ),
    # The VM must exist and have booted; the workspace must exist.
    pulumi.ResourceOptions(depends_on=[vm, cloud]),
)

# 4. Outputs for the training CLI (python -m training), which reads `pulumi stack output --json`.
pulumi.export("azureSubscriptionId", cloud.subscription_id)
pulumi.export("resourceGroupName", cloud.resource_group_name)
pulumi.export("location", cloud.location)
pulumi.export("workspaceName", cloud.workspace_name)
pulumi.export("workspaceId", cloud.workspace_id)
pulumi.export("registryName", cloud.registry_name)
pulumi.export("registryLoginServer", cloud.registry_login_server)
pulumi.export("registryId", cloud.registry_id)
pulumi.export("registryPullTokenName", pull_token.token_name)
pulumi.export("registryPullTokenId", pull_token.token_id)
pulumi.export("workspaceStorageAccountId", cloud.storage_account_id)
pulumi.export("hubResourceGroupName", config.hub.resource_group_name)
pulumi.export("hubStorageAccountName", hub_storage.account_name)
pulumi.export("hubStorageAccountId", hub_storage.account_id)
pulumi.export("hubBlobEndpoint", hub_storage.blob_endpoint)
pulumi.export("hubDataContainer", hub_storage.container_name)
pulumi.export("hubVmId", vm.vm_id)
pulumi.export("hubVmPublicIp", network.public_ip_address)
pulumi.export("hubVmAdminUsername", vm.admin_username)
pulumi.export("computeName", compute.compute_name)
pulumi.export("computeId", compute.compute_id)
pulumi.export("sshHostKeyFingerprint", compute.host_key_fingerprint)
pulumi.export("stackName", config.stack)
pulumi.export("experimentName", config.attach.experiment_name)
