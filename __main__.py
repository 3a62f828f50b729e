"""edge-training: train where the data lives.

Reads like the pattern: the cloud side (Azure ML workspace and registry), the edge side (storage
and a Docker VM on Azure Stack Hub), the attach step joining them, and the outputs the training
CLI consumes.
"""

from __future__ import annotations

import pulumi

from components.config import from_pulumi

config = from_pulumi()  # validates every key; raises ConfigError before any resource exists

# 1. Cloud side: Azure ML workspace, its storage, key vault, App Insights, our registry.

# 2. Edge side: Hub storage for the private data, and an Ubuntu VM with Docker.

# 3. Attach: preflight the VM over SSH and attach it to the workspace as compute.

# 4. Outputs for the training CLI (python -m training), which reads `pulumi stack output --json`.
pulumi.export("stackName", config.stack)
pulumi.export("experimentName", config.attach.experiment_name)
