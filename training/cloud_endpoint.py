"""`deploy --target cloud`: the model behind an Azure ML managed online endpoint.

Blue/green by deployment: each model version is a new deployment `v<version>` on the model's
endpoint. Traffic moves to it only when it is healthy, and then all of it. Healthy means its
provisioningState, read back after the create, is Succeeded: a deployment whose container
crashes or never starts serving ends Failed instead (ResourceNotReady and friends in Microsoft
Learn's "Troubleshooting online endpoints deployment and scoring"). A deployment that is not
healthy leaves the endpoint's traffic as it was, and its log tail is reported.

What runs: with `--image` (from `package`), that very image (a custom container: our Dockerfile
with azureml-inference-server-http; liveness/readiness on GET /, scoring on POST /score, port
5001); without it, the pinned Azure ML base image with the serving requirements (which carry
azureml-inference-server-http, as managed online endpoints require) and score.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.ai.ml.entities import (
    CodeConfiguration,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Route,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from training.jobs import BASE_IMAGE
from training.local_server import REQUIREMENTS, SERVING

log = logging.getLogger(__name__)
SERVER_PORT = 5001


class CloudDeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class CloudRelease:
    endpoint: str
    deployment: str
    scoring_uri: str
    traffic: Mapping[str, int]


def endpoint_name(model: str) -> str:
    # Endpoint names: 3-32 letters, digits and hyphens, starting with a letter.
    return re.sub(r"[^a-zA-Z0-9-]", "-", f"ep-{model}")[:32].rstrip("-")


def deployment_name(version: str) -> str:
    """`v007` for version 7: deployment names are 3-32 letters, digits and hyphens."""
    if version.isdigit():
        return f"v{int(version):03d}"
    name = re.sub(r"[^a-z0-9-]", "-", f"v-{version.lower()}")[:32].rstrip("-")
    if len(name) < 3:
        raise CloudDeployError(f"model version {version!r} gives no valid deployment name")
    return name


def serving_conda() -> dict[str, Any]:
    """The server's pinned requirements (azureml-inference-server-http, mlflow-skinny, pandas,
    skops with scikit-learn) as a conda spec. Without --image, a model needing more (LightGBM,
    XGBoost, ...) is not served by this environment: `package` builds the image that has it."""
    pins = [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and line[0] != "#"]
    return {"name": "edge-training-serving", "channels": ["conda-forge"],
            "dependencies": ["python=3.11", "pip", {"pip": pins}]}  # fmt: skip


def deployment_of(endpoint: str, model: str, version: str, image: str | None, instance_type: str) -> Any:
    name = deployment_name(version)
    if image:
        route = Route(path="/", port=SERVER_PORT)
        environment = Environment(
            image=image,
            inference_config={
                "liveness_route": {"path": route.path, "port": route.port},
                "readiness_route": {"path": route.path, "port": route.port},
                "scoring_route": {"path": "/score", "port": SERVER_PORT},
            },
        )
        return ManagedOnlineDeployment(
            name=name, endpoint_name=endpoint, environment=environment,
            instance_type=instance_type, instance_count=1, tags={"model": f"{model}:{version}"},
        )  # fmt: skip
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model=f"azureml:{model}:{version}",
        environment=Environment(image=BASE_IMAGE, conda_file=serving_conda()),
        code_configuration=CodeConfiguration(code=str(SERVING), scoring_script="score.py"),
        instance_type=instance_type,
        instance_count=1,
        tags={"model": f"{model}:{version}"},
    )


def switched_traffic(current: Mapping[str, int] | None, new: str) -> dict[str, int]:
    """All of the traffic to `new`, none to the others: never a map that leaves `new` at 0%."""
    traffic = {name: 0 for name in (current or {})}
    traffic[new] = 100
    return traffic


def provisioning_state(deployment: Any) -> str:
    """The state as the service spells it; the SDK hands back a str-valued enum or a plain string."""
    state = getattr(deployment, "provisioning_state", None)
    return str(getattr(state, "value", state) or "unknown")


def is_healthy(deployment: Any) -> bool:
    """Succeeded is the only healthy state; a missing state is not."""
    return provisioning_state(deployment).lower() == "succeeded"


def _log_tail(ml_client: Any, endpoint: str, deployment: str) -> str:
    try:
        return str(ml_client.online_deployments.get_logs(deployment, endpoint, lines=30))
    except HttpResponseError as error:
        return f"(no logs: {error.reason or error.status_code})"


def deploy_online(
    ml_client: Any,
    model: str,
    version: str,
    image: str | None = None,
    instance_type: str = "Standard_DS3_v2",
) -> CloudRelease:
    name = endpoint_name(model)
    try:
        endpoint = ml_client.online_endpoints.get(name)
    except ResourceNotFoundError:
        endpoint = ml_client.online_endpoints.begin_create_or_update(
            ManagedOnlineEndpoint(name=name, auth_mode="key")
        ).result()
    deployment = deployment_of(name, model, version, image, instance_type)
    try:
        ml_client.online_deployments.begin_create_or_update(deployment).result()
    except HttpResponseError as error:
        raise CloudDeployError(
            f"deployment {deployment.name} on {name} failed: {error.message}; traffic unchanged "
            f"({dict(endpoint.traffic or {})}). Log tail:\n{_log_tail(ml_client, name, deployment.name)}"
        ) from None
    created = ml_client.online_deployments.get(deployment.name, name)
    if not is_healthy(created):
        raise CloudDeployError(
            f"deployment {deployment.name} on {name} is {provisioning_state(created)}, not Succeeded; traffic "
            f"unchanged ({dict(endpoint.traffic or {})}). Log tail:\n{_log_tail(ml_client, name, deployment.name)}"
        )
    endpoint = ml_client.online_endpoints.get(name)
    endpoint.traffic = switched_traffic(endpoint.traffic, deployment.name)
    ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    after = ml_client.online_endpoints.get(name)
    if dict(after.traffic or {}).get(deployment.name) != 100:
        raise CloudDeployError(f"endpoint {name} reports traffic {after.traffic}, not 100% to {deployment.name}")
    log.info("endpoint %s: 100%% of traffic to %s", name, deployment.name)
    return CloudRelease(name, deployment.name, str(after.scoring_uri), dict(after.traffic))
