"""`deploy --target cloud`: the model behind an Azure ML managed online endpoint."""

from __future__ import annotations

import re
from typing import Any

from azure.ai.ml.entities import CodeConfiguration, Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint

from training.jobs import BASE_IMAGE, CONDA_FILE
from training.packaging import SERVING


def endpoint_name(model: str) -> str:
    # Endpoint names: 3-32 letters, digits and hyphens, starting with a letter.
    return re.sub(r"[^a-zA-Z0-9-]", "-", f"ep-{model}")[:32].rstrip("-")


def deploy_online(ml_client: Any, model: str, version: str, instance_type: str = "Standard_DS3_v2") -> str:
    name = endpoint_name(model)
    ml_client.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name, auth_mode="key")).result()
    deployment = ManagedOnlineDeployment(
        name=f"v{version}",
        endpoint_name=name,
        model=f"azureml:{model}:{version}",
        environment=Environment(image=BASE_IMAGE, conda_file=str(CONDA_FILE)),
        code_configuration=CodeConfiguration(code=str(SERVING), scoring_script="score.py"),
        instance_type=instance_type,
        instance_count=1,
    )
    ml_client.online_deployments.begin_create_or_update(deployment).result()
    endpoint = ml_client.online_endpoints.get(name)
    endpoint.traffic = {f"v{version}": 100}
    ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    return str(ml_client.online_endpoints.get(name).scoring_uri)
