"""Edge side: the Ubuntu VM with Docker on the Hub, reachable by SSH key only."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components import naming
from components.config import HubSettings
from components.hub_resource import HubEndpoint, HubResourceSpec, declare
from edge import first_boot

# Sizes with premium storage (DS, DSv2, Fs, Fsv2) take Premium_LRS disks; the others only Standard.
_PREMIUM_SIZE = re.compile(r"Standard_(DS\d+(_v2)?|F\d+s(_v2)?)")


def os_disk_type(vm_size: str) -> str:
    return "Premium_LRS" if _PREMIUM_SIZE.fullmatch(vm_size) else "Standard_LRS"


def vm_properties(
    settings: HubSettings, computer_name: str, nic_id: pulumi.Input[str], script: pulumi.Input[str]
) -> dict[str, Any]:
    os_profile: dict[str, Any] = {
        "computerName": computer_name,
        "adminUsername": settings.admin_username,
        # No adminPassword anywhere: the key is the only way in.
        "linuxConfiguration": {
            "disablePasswordAuthentication": True,
            "ssh": {
                "publicKeys": [
                    {
                        "path": f"/home/{settings.admin_username}/.ssh/authorized_keys",
                        "keyData": settings.ssh_public_key,
                    }
                ]
            },
        },
    }
    if settings.bootstrap == "cloud-init":
        # A script that carries secrets (the Kubernetes mode's onboarding key and join token) is a
        # secret Output: rendered inside the apply, the customData stays secret end to end.
        os_profile["customData"] = (
            first_boot.custom_data(script)
            if isinstance(script, str)
            else pulumi.Output.from_input(script).apply(first_boot.custom_data)
        )
    image = settings.image
    return {
        "hardwareProfile": {"vmSize": settings.vm_size},
        "storageProfile": {
            # Generation 1 marketplace image: the Hub has no generation 2 VMs.
            "imageReference": {
                "publisher": image.publisher,
                "offer": image.offer,
                "sku": image.sku,
                "version": image.version,
            },
            "osDisk": {
                "createOption": "FromImage",
                "diskSizeGB": settings.os_disk_size_gb,
                "managedDisk": {"storageAccountType": os_disk_type(settings.vm_size)},
            },
        },
        "osProfile": os_profile,
        "networkProfile": {"networkInterfaces": [{"id": nic_id}]},
        # No diagnosticsProfile and no Linux diagnostics extension: it fails on the Hub.
    }


def custom_script_properties(script: pulumi.Input[str]) -> dict[str, Any]:
    # CustomScript for Linux at 2.0, the version Hubs syndicate (issue 10); with
    # autoUpgradeMinorVersion a Hub that has a newer 2.x minor version uses that. A Hub without
    # the requested handler version refuses the extension. The script travels in
    # protectedSettings, which stay secret.
    return {
        "publisher": "Microsoft.Azure.Extensions",
        "type": "CustomScript",
        "typeHandlerVersion": "2.0",
        "autoUpgradeMinorVersion": True,
        "protectedSettings": (
            first_boot.custom_script_settings(script)
            if isinstance(script, str)
            else pulumi.Output.from_input(script).apply(first_boot.custom_script_settings)
        ),
    }


@dataclass(frozen=True)
class HubVmArgs:
    settings: HubSettings
    stack: str
    nic_id: pulumi.Input[str] | None
    """The VM's NIC; None for a NIC of its own in `subnet_id`, without a public IP (K3s agents)."""
    tags: Mapping[str, str]
    script: pulumi.Input[str] | None = None
    """The first-boot script; None: the Docker-only script of the virtual-machine mode. Pass a
    secret Output when it carries keys."""
    kind: str = "vm"
    """Names the VM (and its own NIC): `<kind>-edge-<stack>`."""
    subnet_id: pulumi.Input[str] | None = None
    day_two: bool = False
    """The script runs, and reruns whenever it changes, through the CustomScript extension
    `first-boot` (whatever `hubBootstrap` says); the custom data, if any, is the Docker-only first
    boot. So a changed script (a K3s upgrade, a rotated key) changes the extension, never the VM,
    whose osProfile Resource Manager refuses to change (providers/hub_arm_resource.py IMMUTABLE)."""


class HubVm(pulumi.ComponentResource):
    """Ubuntu from the Hub marketplace with Docker installed at first boot, by cloud-init or by
    the CustomScript extension (`hubBootstrap`), running the same script. With `day_two` (the K3s
    nodes) the script always runs from the extension, which reruns it whenever it changes."""

    vm_id: pulumi.Output[str]
    vm_name: pulumi.Output[str]
    admin_username: pulumi.Output[str]
    first_boot_marker: pulumi.Output[str]

    def __init__(self, name: str, args: HubVmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:edge:HubVm", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        vm_name = naming.hub_resource_name(args.kind, args.stack)
        docker_only = first_boot.render_script(s.admin_username, s.docker_version, network=s.edge_network)
        script = args.script if args.script is not None else docker_only
        # What the VM's own body carries: never anything a day-two change touches.
        boot_script = docker_only if args.day_two else script
        nic_id = args.nic_id
        if nic_id is None:
            if args.subnet_id is None:
                raise ValueError(f"HubVm {name}: give nic_id, or subnet_id for a NIC of its own")
            nic_id = declare(
                f"{name}-nic",
                HubResourceSpec(
                    namespace="Microsoft.Network",
                    resource_type="networkInterfaces",
                    name=naming.hub_resource_name(f"nic-{args.kind}", args.stack),
                    resource_group_name=s.resource_group_name,
                    location=s.location,
                    # No public IP: an agent is reached only from inside the virtual network.
                    properties={
                        "ipConfigurations": [
                            {
                                "name": "primary",
                                "properties": {
                                    "primary": True,
                                    "privateIPAllocationMethod": "Dynamic",
                                    "subnet": {"id": args.subnet_id},
                                },
                            }
                        ]
                    },
                    tags=args.tags,
                    hub=HubEndpoint.of(s),
                ),
                child,
            ).id
        vm = declare(
            f"{name}-vm",
            HubResourceSpec(
                namespace="Microsoft.Compute",
                resource_type="virtualMachines",
                name=vm_name,
                resource_group_name=s.resource_group_name,
                location=s.location,
                properties=vm_properties(s, vm_name, nic_id, boot_script),
                tags=args.tags,
                hub=HubEndpoint.of(s),
            ),
            # A stack made before day two carried the K3s script in the custom data: the engine
            # keeps what it has, so moving the script to the extension replaces no VM. And the VM
            # itself waits for what the component waits for (the connected cluster), so a destroy
            # deletes it, and the Arc agents on it, before that.
            pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    ignore_changes=["secretProperties"], depends_on=(opts.depends_on if opts else None)
                ),
            )
            if args.day_two
            else child,
        )
        if s.bootstrap == "custom-script" or args.day_two:
            declare(
                f"{name}-first-boot",
                HubResourceSpec(
                    namespace="Microsoft.Compute",
                    resource_type="extensions",
                    # From the VM's output: replacing the VM (which deletes its extensions)
                    # then makes Pulumi replace the extension too.
                    parent_resource_path=vm.name.apply(lambda name: f"virtualMachines/{name}"),
                    name="first-boot",
                    resource_group_name=s.resource_group_name,
                    location=s.location,
                    properties=custom_script_properties(script),
                    tags=args.tags,
                    hub=HubEndpoint.of(s),
                ),
                child,
            )
        self.vm_id = vm.id
        self.vm_name = vm.name
        self.admin_username = pulumi.Output.from_input(s.admin_username)
        self.first_boot_marker = pulumi.Output.from_input(first_boot.MARKER_PATH_ON_VM)
        self.register_outputs(
            {
                "vmId": self.vm_id,
                "vmName": self.vm_name,
                "adminUsername": self.admin_username,
                "firstBootMarker": self.first_boot_marker,
            }
        )
