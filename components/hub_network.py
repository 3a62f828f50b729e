"""Edge side: the Hub network the VM lives in, with SSH open only to the configured sources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components import naming
from components.config import HubSettings
from components.hub_resource import HubEndpoint, HubResourceSpec, declare, property_of

SUBNET_NAME = "edge"
SSH_PORT_ON_VM = "22"
# What the Kubernetes mode sends out: HTTPS (443) to Azure Resource Manager, Entra ID, the Arc and
# Azure ML endpoints, Microsoft's registry (docs/deploy/edge-modes.md, "Outbound endpoints"), and HTTP (80) to the
# Ubuntu mirrors, whose packages apt checks by signature. Allowed explicitly, so a deny rule
# added later below them cannot cut the cluster off. NSGs filter addresses, not names: the
# endpoint list belongs on the perimeter firewall.
OUTBOUND_PORTS = (("https", "443", 100), ("http-apt", "80", 110))


def outbound_rules() -> list[dict[str, Any]]:
    return [
        {
            "name": f"allow-{name}-out",
            "properties": {
                "priority": priority,
                "direction": "Outbound",
                "access": "Allow",
                "protocol": "Tcp",
                "sourcePortRange": "*",
                "sourceAddressPrefix": "VirtualNetwork",
                "destinationAddressPrefix": "Internet",
                "destinationPortRange": port,
            },
        }
        for name, port, priority in OUTBOUND_PORTS
    ]


def security_rules(settings: HubSettings, kubernetes: bool) -> list[dict[str, Any]]:
    """Virtual-machine mode: SSH from the configured sources, as before. Kubernetes mode: nothing
    inbound from the internet (the Arc agents connect out), SSH only from the configured sources
    and none without them, and outbound HTTPS."""
    ssh = ssh_rule(settings)
    rules = [ssh] if ssh is not None else []
    return rules + outbound_rules() if kubernetes else rules


def ssh_rule(settings: HubSettings) -> dict[str, Any] | None:
    """Inbound SSH from the configured sources only; the Hub's default rules deny the rest. None
    when no source is configured (the Kubernetes mode needs no SSH): no rule at all."""
    sources = list(settings.ssh_source_cidrs)
    if not sources:
        return None
    if "*" in sources:  # only there through hubAllowSshFromAnywhere, and it subsumes the rest
        sources = ["*"]
    source = {"sourceAddressPrefix": sources[0]} if len(sources) == 1 else {"sourceAddressPrefixes": sources}
    return {
        "name": "allow-ssh-from-configured-sources",
        "properties": {
            "priority": 100,
            "direction": "Inbound",
            "access": "Allow",
            "protocol": "Tcp",
            "sourcePortRange": "*",
            **source,
            "destinationAddressPrefix": "*",
            "destinationPortRange": SSH_PORT_ON_VM,
        },
    }


@dataclass(frozen=True)
class HubNetworkArgs:
    settings: HubSettings
    stack: str
    tags: Mapping[str, str]
    kubernetes: bool = False
    """The NSG's rules for the Kubernetes edge mode (see `security_rules`)."""


class HubNetwork(pulumi.ComponentResource):
    """Virtual network and subnet, an NSG allowing only SSH from the configured CIDRs, a static
    public IP and the VM's NIC."""

    nic_id: pulumi.Output[str]
    public_ip_address: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    nsg_id: pulumi.Output[str]

    def __init__(self, name: str, args: HubNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("edge-training:edge:HubNetwork", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)

        def spec(resource_type: str, kind: str, properties: Mapping[str, Any], **extra: Any) -> HubResourceSpec:
            return HubResourceSpec(
                namespace="Microsoft.Network",
                resource_type=resource_type,
                name=naming.hub_resource_name(kind, args.stack),
                resource_group_name=s.resource_group_name,
                location=s.location,
                properties=properties,
                tags=args.tags,
                hub=HubEndpoint.of(s),
                **extra,
            )

        nsg = declare(
            f"{name}-nsg",
            spec("networkSecurityGroups", "nsg", {"securityRules": security_rules(s, args.kubernetes)}),
            child,
        )
        vnet = declare(
            f"{name}-vnet",
            spec(
                "virtualNetworks",
                "vnet",
                {
                    "addressSpace": {"addressPrefixes": [s.vnet_address_space]},
                    "subnets": [
                        {
                            "name": SUBNET_NAME,
                            "properties": {"addressPrefix": s.subnet_prefix, "networkSecurityGroup": {"id": nsg.id}},
                        }
                    ],
                },
            ),
            child,
        )
        # The Hub offers Basic public IPs; Static, so the attach step and Azure ML keep one address.
        public_ip = declare(
            f"{name}-pip",
            spec(
                "publicIPAddresses",
                "pip",
                {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                sku={"name": "Basic"},
            ),
            child,
        )
        subnet_id = vnet.id.apply(lambda vnet_id: f"{vnet_id}/subnets/{SUBNET_NAME}")
        nic = declare(
            f"{name}-nic",
            spec(
                "networkInterfaces",
                "nic",
                {
                    "ipConfigurations": [
                        {
                            "name": "primary",
                            "properties": {
                                "primary": True,
                                "privateIPAllocationMethod": "Dynamic",
                                "subnet": {"id": subnet_id},
                                "publicIPAddress": {"id": public_ip.id},
                            },
                        }
                    ]
                },
            ),
            child,
        )
        self.nic_id = nic.id
        self.public_ip_address = property_of(public_ip, "ipAddress")
        self.subnet_id = subnet_id
        self.nsg_id = nsg.id
        self.register_outputs(
            {
                "nicId": self.nic_id,
                "publicIpAddress": self.public_ip_address,
                "subnetId": self.subnet_id,
                "nsgId": self.nsg_id,
            }
        )
