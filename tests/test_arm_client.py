"""clients/arm.py against a local HTTPS Resource Manager: every answer checked, ARM's DELETE
contract, the token kept on its host, and every wait inside the call's deadline.

Waits are recorded by the transport (RecordingTransport) except where a test says it really
sleeps: one test per retry path waits for real, briefly, through the requests transport."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport

from clients.arm import ArmClient, ArmError, ArmTimeouts
from clients.cloud import Cloud
from clients.deadline import Deadline
from tests.harness.arm_server import (
    TEST_TOKEN,
    ArmEndpoint,
    RecordingTransport,
    Reply,
    StaticCredential,
    https_server,
)
from tests.harness.clock import FakeClock

PATH = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg"
VERSION = "2018-11-01"


def resource(state: str | None = "Succeeded") -> dict[str, Any]:
    properties = {} if state is None else {"provisioningState": state}
    return {"id": PATH, "name": "nsg", "properties": properties}


def local_cloud(arm: ArmEndpoint) -> Cloud:
    return Cloud(arm.url + "/", "https://login.microsoftonline.com/", "https://management.core.windows.net/")


@pytest.fixture
def transport(arm: ArmEndpoint) -> RecordingTransport:
    return arm.transport()


@pytest.fixture
def client(arm: ArmEndpoint, transport: RecordingTransport) -> Iterator[ArmClient]:
    timeouts = ArmTimeouts(poll_interval=1.0)
    with ArmClient(local_cloud(arm), StaticCredential(), transport=transport, timeouts=timeouts, retry_total=2) as c:
        yield c


def status_url(arm: ArmEndpoint, name: str = "op1") -> str:
    return f"{arm.url}/subscriptions/s/providers/Microsoft.Network/locations/x/operations/{name}?api-version={VERSION}"


# --- every answer checked ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (Reply(200), "0 bytes, Content-Type 'none'"),
        (Reply(200, raw=b"<html>gateway</html>", headers={"Content-Type": "text/html"}), "Content-Type 'text/html'"),
        (Reply(200, [resource()]), "not a JSON object"),
        (Reply(200, raw=b"{not json", headers={"Content-Type": "application/json"}), "not a JSON object"),
    ],
    ids=["empty", "html", "a list", "broken json"],
)
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_200_that_is_not_a_json_object_is_not_success(arm, client, reply, said, method) -> None:
    arm.fake.script(method, PATH, reply)
    with pytest.raises(ArmError, match=rf"{method} {PATH}: HTTP 200 MalformedResponse: .*{said}"):
        if method == "GET":
            client.get(PATH, VERSION)
        else:
            client.put(PATH, VERSION, {"location": "local"})


def test_a_201_announcing_an_operation_without_a_state_keeps_polling(arm, client, transport) -> None:
    arm.fake.script("PUT", PATH, Reply(201, resource(None), {"Azure-AsyncOperation": status_url(arm)}))
    arm.fake.script(
        "GET",
        "/subscriptions/s/providers/Microsoft.Network/locations/x/operations/op1",
        Reply(200, {"status": "InProgress"}),
        Reply(200, {"status": "Succeeded"}),
    )
    arm.fake.script("GET", PATH, Reply(200, resource("Succeeded")))
    assert client.put(PATH, VERSION, {"location": "local"})["properties"]["provisioningState"] == "Succeeded"
    polls = [r for r in arm.fake.requests if r.path.endswith("/operations/op1")]
    assert len(polls) == 2 and transport.slept == [1.0, 1.0]  # before each poll, none after


def test_a_202_put_with_nothing_to_follow_is_read_until_it_settles(arm, client) -> None:
    arm.fake.script("PUT", PATH, Reply(202))
    arm.fake.script("GET", PATH, Reply(200, resource("Creating")), Reply(200, resource("Succeeded")))
    result = client.put(PATH, VERSION, {"location": "local"})
    assert result["properties"]["provisioningState"] == "Succeeded"


def test_a_provisioning_that_ends_failed_is_an_error_naming_the_resource(arm, client) -> None:
    arm.fake.script("PUT", PATH, Reply(200, resource("Failed")))
    with pytest.raises(ArmError, match=rf"PUT {PATH}: HTTP 200 ProvisioningFailed"):
        client.put(PATH, VERSION, {"location": "local"})


def test_a_failure_says_the_services_reasons_never_a_key_it_quotes(arm, client) -> None:
    """Azure ML lists why in `provisioningErrors`; a service that quotes the request back (a compute
    attach's private key) has the key cut out of the error."""
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    failed = resource("Failed")
    failed["properties"]["provisioningErrors"] = [{"error": {"code": "BadKey", "message": f"cannot use {key}"}}]
    arm.fake.script("PUT", PATH, Reply(200, failed))
    with pytest.raises(ArmError, match=r"ProvisioningFailed: BadKey: cannot use \[redacted key\]$"):
        client.put(PATH, VERSION, {"location": "local"})
    arm.fake.script("PUT", PATH, Reply(400, {"error": {"code": "BadRequest", "message": f"no: {key}"}}))
    with pytest.raises(ArmError, match=r"HTTP 400 BadRequest: no: \[redacted key\]$"):
        client.put(PATH, VERSION, {"location": "local"})


def test_a_resource_polled_into_failed_says_why(arm, client) -> None:
    failed = resource("Failed")
    failed["properties"]["provisioningErrors"] = [{"error": {"code": "BadSsh", "message": "cannot log in"}}]
    arm.fake.script("PUT", PATH, Reply(201, resource("Creating")))
    arm.fake.script("GET", PATH, Reply(200, failed))
    with pytest.raises(ArmError, match=r"HTTP 200 ProvisioningFailed: BadSsh: cannot log in$"):
        client.put(PATH, VERSION, {"location": "local"})


def test_an_error_without_arms_error_object_quotes_nothing_of_it(arm, client) -> None:
    arm.fake.script("PUT", PATH, Reply(409, {"administratorAccount": {"privateKeyData": "hunter2"}}))
    with pytest.raises(ArmError, match=r"HTTP 409 Unknown: the answer carries no ARM error object$") as caught:
        client.put(PATH, VERSION, {"location": "local"})
    assert "hunter2" not in str(caught.value)


def test_an_operation_still_running_at_its_deadline_fails_naming_the_resource(arm, client, transport) -> None:
    clock = FakeClock(1000.0)
    arm.fake.script("PUT", PATH, Reply(201, resource("Creating"), {"Azure-AsyncOperation": status_url(arm)}))
    arm.fake.script(
        "GET",
        "/subscriptions/s/providers/Microsoft.Network/locations/x/operations/op1",
        Reply(200, {"status": "InProgress"}),
    )
    slow = ArmClient(
        local_cloud(arm),
        StaticCredential(),
        transport=transport,
        timeouts=ArmTimeouts(poll_interval=10),
        sleep=clock.sleep,
    )
    with pytest.raises(ArmError, match=rf"PUT {PATH}: no answer OperationTimedOut: still running at the 30s deadline"):
        slow.put(PATH, VERSION, {"location": "local"}, Deadline(30, clock))
    # The last wait leaves time for a last look before the deadline (clients/deadline.py).
    assert clock.sleeps == [10, 10, 9] and clock.now - clock.start == 29


# --- DELETE as Resource Manager documents it -----------------------------------------------------


def test_a_202_delete_follows_its_location_then_reads_until_404(arm, client, transport) -> None:
    location = f"{arm.url}/subscriptions/s/providers/Microsoft.Network/operationResults/d1?api-version={VERSION}"
    arm.fake.script("DELETE", PATH, Reply(202, headers={"Location": location, "Retry-After": "2"}))
    arm.fake.script(
        "GET",
        "/subscriptions/s/providers/Microsoft.Network/operationResults/d1",
        Reply(202, headers={"Location": location}),
        Reply(204),
    )
    arm.fake.script("GET", PATH, Reply(200, resource("Deleting")), Reply(404, {"error": {"code": "ResourceNotFound"}}))
    assert client.delete(PATH, VERSION) is True
    assert [r.path for r in arm.fake.requests].count(PATH) == 3  # the DELETE, then two reads
    assert transport.slept == [2.0, 1.0, 1.0]  # Retry-After, then the poll interval


def test_a_202_delete_with_nothing_to_poll_is_read_until_it_is_gone(arm, client) -> None:
    arm.fake.script("DELETE", PATH, Reply(202))
    arm.fake.script("GET", PATH, Reply(200, resource("Deleting")), Reply(404, {"error": {"code": "NotFound"}}))
    assert client.delete(PATH, VERSION) is True
    assert [r.method for r in arm.fake.requests] == ["DELETE", "GET", "GET"]


def test_a_202_delete_still_there_at_the_deadline_is_a_failure(arm, transport) -> None:
    clock = FakeClock(1000.0)
    arm.fake.script("DELETE", PATH, Reply(202))
    arm.fake.script("GET", PATH, Reply(200, resource("Deleting")))
    slow = ArmClient(local_cloud(arm), StaticCredential(), transport=transport, sleep=clock.sleep)
    with pytest.raises(ArmError, match=rf"DELETE {PATH}: no answer OperationTimedOut: the resource is still there"):
        slow.delete(PATH, VERSION, Deadline(20, clock))


@pytest.mark.parametrize(("status", "deleted"), [(200, True), (204, False), (404, False)])
def test_a_delete_answered_at_once(arm, client, status, deleted) -> None:
    arm.fake.script("DELETE", PATH, Reply(status))
    assert client.delete(PATH, VERSION) is deleted
    assert len(arm.fake.requests) == 1


def test_a_409_delete_is_not_a_deletion(arm, client) -> None:
    arm.fake.script(
        "DELETE", PATH, Reply(409, {"error": {"code": "InUseSubnetCannotBeDeleted", "message": "in use by nic-1"}})
    )
    with pytest.raises(ArmError, match=rf"DELETE {PATH}: HTTP 409 InUseSubnetCannotBeDeleted: in use by nic-1"):
        client.delete(PATH, VERSION)


# --- the token stays on its host -----------------------------------------------------------------


def test_a_polling_url_on_another_host_is_refused_and_gets_no_token(arm, client, tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    def elsewhere(method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        seen.append(headers)
        return Reply(200, {"status": "Succeeded"})

    (tmp_path / "other").mkdir()
    with https_server(tmp_path / "other", elsewhere, "other-host") as (other, _):
        foreign = other.replace("127.0.0.1", "localhost") + "/operations/op1"
        arm.fake.script("PUT", PATH, Reply(201, resource("Creating"), {"Azure-AsyncOperation": foreign}))
        with pytest.raises(ArmError, match=r"ForeignPollingHost: .* named https://localhost:\d+ to poll"):
            client.put(PATH, VERSION, {"location": "local"})
    assert seen == []
    assert arm.fake.requests[0].headers["authorization"] == f"Bearer {TEST_TOKEN}"


# --- deadlines: bodies, Retry-After, retries ------------------------------------------------------


@pytest.mark.parametrize("stall_at", [None, 15], ids=["trickled", "trickled then stalled"])
def test_a_body_trickled_or_stalled_trips_the_deadline(arm, client, stall_at) -> None:
    """Each byte comes well within the read timeout; the whole body would take a minute. A stall
    after 1.5 s must end at the 2 s deadline, not at a read timeout set when the request began."""
    arm.fake.script("GET", PATH, Reply(200, resource(), trickle_s=0.1, stall_at=stall_at))
    started = time.monotonic()
    with pytest.raises(ArmError, match=r"DeadlineExceeded: .*the 2s deadline"):
        client.get(PATH, VERSION, Deadline(2.0))
    assert time.monotonic() - started < 2.9


def test_a_retry_after_beyond_the_deadline_fails_at_once(arm, client, transport) -> None:
    arm.fake.script("GET", PATH, Reply(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "50"}))
    with pytest.raises(ArmError, match=r"HTTP 429 with Retry-After: 50s, beyond the \d+s left"):
        client.get(PATH, VERSION, Deadline(20))
    assert transport.slept == [] and len(arm.fake.requests) == 1


def test_throttling_is_waited_out_for_real_within_the_deadline(arm) -> None:
    """The requests transport really sleeps here: 0.2 s, as the service asked (retry-after-ms)."""
    arm.fake.script(
        "GET",
        PATH,
        Reply(429, {"error": {"code": "TooManyRequests"}}, {"retry-after-ms": "200"}, delay_s=0.1),
        Reply(200, resource(), delay_s=0.1),
    )
    real = RequestsTransport(connection_verify=str(arm.ca_file))
    with ArmClient(local_cloud(arm), StaticCredential(), transport=real) as slow:
        started = time.monotonic()
        assert slow.get(PATH, VERSION, Deadline(5))["name"] == "nsg"
        assert 0.4 <= time.monotonic() - started < 4
    real.close()


def test_an_operation_is_polled_after_its_retry_after_for_real(arm) -> None:
    """The requests transport really sleeps between polls: 0.2 s twice, as the operation asked."""
    status = "/subscriptions/s/providers/Microsoft.Network/locations/x/operations/op1"
    later = {"retry-after-ms": "200"}
    arm.fake.script("PUT", PATH, Reply(201, resource("Creating"), {"Azure-AsyncOperation": status_url(arm), **later}))
    arm.fake.script("GET", status, Reply(200, {"status": "InProgress"}, later), Reply(200, {"status": "Succeeded"}))
    arm.fake.script("GET", PATH, Reply(200, resource("Succeeded")))
    real = RequestsTransport(connection_verify=str(arm.ca_file))
    with ArmClient(local_cloud(arm), StaticCredential(), transport=real) as slow:
        started = time.monotonic()
        assert slow.put(PATH, VERSION, {"location": "local"}, Deadline(10))["name"] == "nsg"
        assert 0.4 <= time.monotonic() - started < 5
    real.close()


def test_the_compute_clients_bodies_end_at_its_deadline_too(arm) -> None:
    """components/azureml_computes.py sends through this client: a trickled body ends at the deadline."""
    from components.azureml_computes import ComputeApiError, ComputeClient, ComputeRef

    ref = ComputeRef("s", "rg", "ws", "edge-vm")
    arm.fake.script("GET", ref.path, Reply(200, {"properties": {}}, trickle_s=0.1))
    with ComputeClient(StaticCredential(), local_cloud(arm), transport=arm.transport()) as compute:
        started = time.monotonic()
        with pytest.raises(ComputeApiError, match=r"Timeout: .*the 1s deadline"):
            compute.get(ref, Deadline(1.0))
    assert time.monotonic() - started < 2.5
