"""The edge-training policy pack: `pulumi preview --policy-pack policy`."""

from baseline import POLICIES
from pulumi_policy import PolicyPack

PolicyPack(name="edge-training-baseline", policies=POLICIES)
