"""Vertex AI endpoints (components/deploy/vertex_endpoint.py) through the real google-cloud-aiplatform
client, talking REST to the loopback stand-in of the Vertex API (tests/loopback_vertex.py
``LoopbackEndpoints``, which records every request as the client sent it and forwards predictions to a
server per deployed model). Nothing is patched: the assertions read the recorded requests, the endpoint
the stand-in holds, and what the model servers received.

The model servers here are stub OpenAI-compatible responders (``LoopbackJSON``), one per registered
version, each answering with its own name so a test sees which deployed model served a request."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from google.cloud.aiplatform_v1 import AcceleratorType
from loopback_vertex import LoopbackJSON, LoopbackVertex

from components.deploy.vertex_endpoint import (
    DeployError,
    EndpointError,
    VertexEndpoint,
    _canary_split,
    current_split,
    deploy_canary,
    ensure_endpoint,
    raw_predict,
    rollback,
    set_split,
    undeploy,
)

PROJECT, REGION = "test-project", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
MODEL = f"{PARENT}/models/travel"
IMAGE = "us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve:20240815_1634_RC00"
SA = "serving@test-project.iam.gserviceaccount.com"
RESOURCES = dict(machine_type="g2-standard-8", accelerator_type="NVIDIA_L4", accelerator_count=1)
BODY = {"model": "travel", "messages": [{"role": "user", "content": "Paris?"}], "temperature": 0}


@pytest.fixture()
def vertex():
    """The loopback Vertex API with the SDK pointed at it, and two registered versions of ``travel``."""
    with LoopbackVertex() as api, api.sdk(PROJECT, REGION):
        api.models.seed(PARENT, "travel", 2, {"imageUri": IMAGE, "predictRoute": "/v1/chat/completions"})
        api.requests.clear()
        yield api


def openai_stub(name: str) -> LoopbackJSON:
    """A stub chat.completions server answering with its own name."""

    def answer(path, body):
        if path != "/v1/chat/completions":
            return 404, {"error": f"no route {path}"}
        message = {"role": "assistant", "content": f"answer from {name}"}
        return 200, {
            "object": "chat.completion",
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }

    return LoopbackJSON(answer)


@pytest.fixture()
def stubs():
    servers = {"v1": openai_stub("v1"), "v2": openai_stub("v2")}
    yield servers
    for server in servers.values():
        server.close()


def calls(api, method: str, suffix: str) -> list:
    return [r for r in api.requests if r.method == method and unquote(r.path).endswith(suffix)]


def deployed_ids(api, endpoint) -> list[str]:
    return [d["id"] for d in api.endpoints.store[endpoint.resource_name]["deployedModels"]]


def test_an_endpoint_is_created_once_then_reused_by_display_name(vertex):
    first = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION, labels={"app": "slmforge"})
    again = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)
    assert again.resource_name == first.resource_name
    assert first.resource_name.startswith(f"{PARENT}/endpoints/")
    (create,) = calls(vertex, "POST", f"{PARENT}/endpoints")
    assert create.body["displayName"] == "travel-endpoint" and create.body["labels"] == {"app": "slmforge"}
    lists = calls(vertex, "GET", f"{PARENT}/endpoints")
    assert len(lists) == 2 and all(r.query["filter"] == 'display_name="travel-endpoint"' for r in lists)
    # by resource name: no search, no create
    by_name = ensure_endpoint(first.resource_name, project=PROJECT, region=REGION)
    assert by_name.resource_name == first.resource_name
    assert len(calls(vertex, "POST", f"{PARENT}/endpoints")) == 1
    assert current_split(first) == {}


def test_two_endpoints_with_one_display_name_are_refused(vertex):
    from google.cloud import aiplatform

    for _ in range(2):
        aiplatform.Endpoint.create(display_name="twice")
    with pytest.raises(DeployError, match="2 endpoints are named 'twice'"):
        ensure_endpoint("twice", project=PROJECT, region=REGION)


def test_a_network_is_refused_because_a_private_endpoint_has_no_traffic_split(vertex):
    with pytest.raises(DeployError, match="no traffic split"):
        ensure_endpoint("e", project=PROJECT, region=REGION, network="projects/1/global/networks/vpc")
    assert vertex.requests == []


def test_first_deploy_gets_all_traffic_then_a_canary_gets_its_share_and_rollback_restores(vertex):
    endpoint = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)

    first = deploy_canary(
        endpoint,
        f"{MODEL}@1",
        canary_percent=10,
        min_replicas=1,
        max_replicas=2,
        service_account=SA,
        **RESOURCES,
    )
    assert first.split_before == {} and first.split_after == {first.deployed_model_id: 100}
    (deploy,) = calls(vertex, "POST", ":deployModel")
    assert deploy.body["trafficSplit"] == {"0": 100}
    deployed = deploy.body["deployedModel"]
    assert deployed["model"] == f"{MODEL}@1" and deployed["serviceAccount"] == SA
    resources = deployed["dedicatedResources"]
    assert resources["machineSpec"] == {
        "machineType": "g2-standard-8",
        "acceleratorType": AcceleratorType.NVIDIA_L4,  # the client sends enums as numbers
        "acceleratorCount": 1,
    }
    assert (resources["minReplicaCount"], resources["maxReplicaCount"]) == (1, 2)

    canary = deploy_canary(endpoint, f"{MODEL}@2", canary_percent=10, **RESOURCES)
    one, two = first.deployed_model_id, canary.deployed_model_id
    assert canary.split_before == {one: 100}
    assert canary.split_after == {one: 90, two: 10} == vertex.endpoints.split(endpoint.resource_name)
    assert calls(vertex, "POST", ":deployModel")[1].body["trafficSplit"] == {one: 90, "0": 10}
    versions = [d["modelVersionId"] for d in vertex.endpoints.store[endpoint.resource_name]["deployedModels"]]
    assert versions == ["1", "2"]

    assert rollback(endpoint, canary.split_before, two) == {one: 100}
    assert deployed_ids(vertex, endpoint) == [one]
    (patch,) = calls(vertex, "PATCH", endpoint.resource_name)
    assert patch.query["updateMask"] == "trafficSplit" and patch.body["trafficSplit"] == {one: 100, two: 0}
    (undeploy_call,) = calls(vertex, "POST", ":undeployModel")
    assert undeploy_call.body["deployedModelId"] == two and undeploy_call.body["trafficSplit"] == {one: 100}


def test_a_canary_shares_the_rest_in_proportion_to_the_models_serving_now():
    assert _canary_split({}, 10) == {"0": 100}
    assert _canary_split({"a": 0, "b": 0}, 25) == {"0": 100}
    assert _canary_split({"a": 50, "b": 50}, 10) == {"a": 45, "b": 45, "0": 10}
    assert _canary_split({"a": 67, "b": 33, "c": 0}, 10) == {"a": 60, "b": 30, "0": 10}
    assert _canary_split({"a": 1, "b": 1, "c": 98}, 1) == {"a": 1, "b": 1, "c": 97, "0": 1}
    for before in ({"a": 33, "b": 33, "c": 34}, {"x": 7, "y": 93}):
        for pct in (1, 10, 33, 99, 100):
            split = _canary_split(before, pct)
            assert sum(split.values()) == 100 and split["0"] == pct


def test_a_failed_deploy_leaves_the_split_unchanged_and_says_so(vertex):
    endpoint = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)
    first = deploy_canary(endpoint, f"{MODEL}@1", canary_percent=10, **RESOURCES)
    vertex.endpoints.fail_next("deployModel", 500, message="internal error while deploying")
    with pytest.raises(DeployError) as raised:
        deploy_canary(endpoint, f"{MODEL}@2", canary_percent=10, **RESOURCES)
    error = raised.value
    assert error.endpoint == endpoint.resource_name
    assert error.split_before == error.split_after == {first.deployed_model_id: 100}
    message = str(error)
    assert "nothing was deployed and the traffic split is unchanged" in message
    assert "HTTP 500" in message and endpoint.resource_name in message and f"{MODEL}@2" in message
    assert deployed_ids(vertex, endpoint) == [first.deployed_model_id]

    # the deployment failing inside the operation (Vertex's way): the same
    vertex.endpoints.fail_next("deployModel", 500, in_operation=True, message="container failed to start")
    with pytest.raises(DeployError, match="traffic split is unchanged") as raised:
        deploy_canary(endpoint, f"{MODEL}@2", canary_percent=10, **RESOURCES)
    assert "container failed to start" in str(raised.value)
    assert vertex.endpoints.split(endpoint.resource_name) == {first.deployed_model_id: 100}

    with pytest.raises(DeployError, match=r"HTTP 404.*traffic split is unchanged"):  # no such version
        deploy_canary(endpoint, f"{MODEL}@7", canary_percent=10, **RESOURCES)


def test_a_deploy_that_went_on_after_its_error_is_undone_and_reported(vertex):
    endpoint = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)
    first = deploy_canary(endpoint, f"{MODEL}@1", canary_percent=10, **RESOURCES)
    vertex.endpoints.fail_next("deployModel", 504, applied=True)  # Vertex deployed it, the client got 504
    with pytest.raises(DeployError) as raised:
        deploy_canary(endpoint, f"{MODEL}@2", canary_percent=10, **RESOURCES)
    assert "appeared and were undeployed; the traffic split was restored" in str(raised.value)
    assert raised.value.split_after == {first.deployed_model_id: 100}
    assert deployed_ids(vertex, endpoint) == [first.deployed_model_id]
    assert vertex.endpoints.split(endpoint.resource_name) == {first.deployed_model_id: 100}


def test_undeploy_moves_the_traffic_to_the_others_first(vertex):
    endpoint = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)
    one = deploy_canary(endpoint, f"{MODEL}@1", canary_percent=10, **RESOURCES).deployed_model_id
    two = deploy_canary(endpoint, f"{MODEL}@2", canary_percent=30, **RESOURCES).deployed_model_id
    assert set_split(endpoint, {one: 20, two: 80}) == {one: 20, two: 80}
    with pytest.raises(DeployError, match="add up to 100"):
        set_split(endpoint, {one: 50})
    assert undeploy(endpoint, two) == {one: 100}
    assert calls(vertex, "PATCH", endpoint.resource_name)[-1].body["trafficSplit"] == {one: 100, two: 0}
    assert undeploy(endpoint, one) == {}
    assert deployed_ids(vertex, endpoint) == []


def test_raw_predict_goes_to_the_deployed_models_by_their_split(vertex, stubs):
    endpoint = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)
    one = deploy_canary(endpoint, f"{MODEL}@1", canary_percent=10, **RESOURCES).deployed_model_id
    vertex.endpoints.serve(f"{MODEL}@1", stubs["v1"].url)
    vertex.endpoints.serve(f"{MODEL}@2", stubs["v2"].url)

    reply, served_by = raw_predict(endpoint.resource_name, BODY, project=PROJECT, region=REGION)
    assert served_by == one
    assert reply["choices"][0]["message"]["content"] == "answer from v1"
    ((path, received, _),) = stubs["v1"].requests
    assert path == "/v1/chat/completions" and received == BODY
    (raw,) = calls(vertex, "POST", ":rawPredict")
    assert raw.path == f"/v1/{endpoint.resource_name}:rawPredict" and raw.body == BODY

    two = deploy_canary(endpoint, f"{MODEL}@2", canary_percent=10, **RESOURCES).deployed_model_id
    asking = VertexEndpoint(endpoint.resource_name, PROJECT, REGION, api_endpoint=vertex.endpoint)
    answers = [asking.ask(BODY) for _ in range(20)]
    served = [a.served_by for a in answers]
    assert served.count(one) == 18 and served.count(two) == 2
    assert {a.text for a in answers if a.served_by == two} == {"answer from v2"}
    assert len(stubs["v2"].requests) == 2


def test_raw_predict_errors_and_timeouts_raise_endpoint_error(vertex, stubs):
    endpoint = ensure_endpoint("travel-endpoint", project=PROJECT, region=REGION)
    deploy_canary(endpoint, f"{MODEL}@1", canary_percent=10, **RESOURCES)
    vertex.endpoints.serve(f"{MODEL}@1", stubs["v1"].url)
    ask = dict(project=PROJECT, region=REGION)

    vertex.endpoints.fail_next("rawPredict", 503)
    with pytest.raises(EndpointError, match="HTTP 503") as raised:
        raw_predict(endpoint.resource_name, BODY, **ask)
    assert endpoint.resource_name in str(raised.value) and "retry" in str(raised.value)

    vertex.endpoints.slow_next("rawPredict", 2.0)
    with pytest.raises(EndpointError, match=r"no answer in 0.5 s"):
        raw_predict(endpoint.resource_name, BODY, timeout_s=0.5, **ask)

    stubs["v1"].faults.append(500)  # the serving container itself fails: passed through, as Vertex does
    with pytest.raises(EndpointError, match="HTTP 500") as raised:
        raw_predict(endpoint.resource_name, BODY, **ask)
    assert "(deployed model " in str(raised.value)

    with pytest.raises(EndpointError, match="HTTP 404"):
        raw_predict(f"{PARENT}/endpoints/999", BODY, **ask)

    assert (
        raw_predict(endpoint.resource_name, BODY, **ask)[0]["choices"][0]["message"]["content"]
        == "answer from v1"
    )
