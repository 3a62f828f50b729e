"""The edge VM's first-boot script, and the two ways of running it (cloud-init or CustomScript)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

SCRIPT = Path(__file__).with_name("first_boot.sh")
SCRIPT_PATH_ON_VM = "/opt/edge-training/first-boot.sh"
MARKER_PATH_ON_VM = "/var/lib/edge-training/first-boot-done"
"""Written last by the script; the attach step waits for it."""


def render_script(admin_username: str, docker_version: str) -> str:
    """The script with its values filled in (both validated by components.config)."""
    return SCRIPT.read_text().replace("@ADMIN_USER@", admin_username).replace("@DOCKER_VERSION@", docker_version)


def cloud_init(script: str) -> str:
    """#cloud-config that writes the script and runs it once, at first boot."""
    document = {
        "write_files": [
            {
                "path": SCRIPT_PATH_ON_VM,
                "permissions": "0755",
                "owner": "root:root",
                "encoding": "b64",
                "content": base64.b64encode(script.encode()).decode(),
            }
        ],
        "runcmd": [["bash", SCRIPT_PATH_ON_VM]],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def custom_data(script: str) -> str:
    """The VM's osProfile.customData: base64 of the cloud-config."""
    return base64.b64encode(cloud_init(script).encode()).decode()


def custom_script_settings(script: str) -> dict[str, str]:
    """protectedSettings of the CustomScript extension (Microsoft.Azure.Extensions 2.x) running it.

    `script` takes the base64 script itself, so nothing is downloaded from storage.
    """
    return {"script": base64.b64encode(script.encode()).decode()}
