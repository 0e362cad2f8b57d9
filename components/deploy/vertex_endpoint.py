"""A registry version on a Vertex AI endpoint: create or reuse the endpoint, deploy the version as a canary
next to the version serving now, move traffic, undeploy, roll back, and ask it through
``:rawPredict``. Small functions over google-cloud-aiplatform (``aiplatform.Endpoint`` / ``Model``); the
project, region and API endpoint come from the arguments and ``aiplatform.init`` as in
components/register/vertex_registry.py.

Traffic splits are ``{deployed model ID: percent}``, summing to 100 while anything is deployed. Every step
that changes one re-reads the endpoint afterwards, so an error says what the split is now, not what it was
meant to be: a failed deploy is checked for a half-made deployment, which is undeployed and the split put
back (or the error says plainly that it could not be).

Predictions: the version's serving container is reached through ``:rawPredict``, which Vertex forwards
as it is to the container's predict route (``containerSpec.predictRoute`` of the registered version), so
an OpenAI chat.completions body needs a container that serves that route (vLLM's OpenAI server with
predictRoute ``/v1/chat/completions``). Vertex answers with ``X-Vertex-AI-Deployed-Model-Id``: the
deployed model that served the request (``VertexEndpoint.ask`` reports it as ``Answer.served_by``).
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass

from components.deploy.checks import Answer, EndpointError, answer_of

__all__ = [
    "DeployError",
    "Deployed",
    "EndpointError",
    "VertexEndpoint",
    "current_split",
    "deploy_canary",
    "ensure_endpoint",
    "raw_predict",
    "rollback",
    "set_split",
    "undeploy",
]

DEPLOYED_MODEL_HEADER = "X-Vertex-AI-Deployed-Model-Id"  # Vertex's rawPredict answer header
NEW_MODEL_KEY = "0"  # the model being deployed, in a deployModel traffic split
_ENDPOINT_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/endpoints/\d+")


class DeployError(RuntimeError):
    """A deployment step that failed: names the endpoint, the step, and the traffic split before it and
    after it (as read back from Vertex; None when it could not be read)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        step: str,
        split_before: dict[str, int] | None = None,
        split_after: dict[str, int] | None = None,
    ):
        self.endpoint, self.step = endpoint, step
        self.split_before, self.split_after = split_before, split_after
        before = "unknown" if split_before is None else json.dumps(split_before, sort_keys=True)
        after = "unknown" if split_after is None else json.dumps(split_after, sort_keys=True)
        super().__init__(
            f"{step} on endpoint {endpoint} failed: {message} [traffic split before: {before}; now: {after}]"
        )


@dataclass(frozen=True)
class Deployed:
    endpoint: str  # the endpoint resource name
    deployed_model_id: str  # the new deployed model
    split_before: dict[str, int]
    split_after: dict[str, int]


# -- errors ----------------------------------------------------------------------------------------------
def _cause(e: Exception) -> str:
    """An SDK or API error in one line, with what to do where the cause is clear."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError

    if isinstance(e, DefaultCredentialsError):
        return (
            f"no Google credentials ({e}); run `gcloud auth application-default login` or set "
            "GOOGLE_APPLICATION_CREDENTIALS"
        )
    if isinstance(e, exceptions.Forbidden):
        return (
            f"permission denied ({e.message}); grant the caller roles/aiplatform.user on the project and "
            "check that the Vertex AI API is enabled"
        )
    if isinstance(e, exceptions.GoogleAPICallError):
        return f"HTTP {e.code}: {e.message}"
    return f"{type(e).__name__}: {e}"


@contextmanager
def _step(endpoint: str, step: str, before: dict[str, int] | None = None, after=None):
    """SDK errors of one step as a DeployError; ``after``: reads the split back for the message."""
    try:
        yield
    except DeployError:
        raise
    except Exception as e:
        now = None
        if after is not None:
            try:
                now = after()
            except Exception:
                now = None
        raise DeployError(
            _cause(e), endpoint=endpoint, step=step, split_before=before, split_after=now
        ) from e


# -- the endpoint ----------------------------------------------------------------------------------------
def ensure_endpoint(
    display_name: str, *, project: str, region: str, network: str = "", labels: dict[str, str] | None = None
):
    """The endpoint named ``display_name`` in ``project``/``region`` (an endpoint resource name or numeric
    ID is taken as it is), created when there is none. Two endpoints with that display name are refused:
    which one the traffic moves on must not be a guess."""
    from google.cloud import aiplatform

    where = f"{display_name!r} in {project}/{region}"
    if network:
        raise DeployError(
            f"network {network!r}: a VPC-peered (private) endpoint serves one deployed model with no "
            "traffic split, so it cannot hold a canary; deploy to a public endpoint (leave the network out)",
            endpoint=where,
            step="find or create the endpoint",
        )
    if _ENDPOINT_NAME.fullmatch(display_name) or display_name.isdigit():
        with _step(where, "get the endpoint"):
            return aiplatform.Endpoint(display_name, project=project, location=region)
    with _step(where, "find the endpoint"):
        found = aiplatform.Endpoint.list(
            filter=f'display_name="{display_name}"', project=project, location=region
        )
    if len(found) > 1:
        names = ", ".join(e.resource_name for e in found)
        raise DeployError(
            f"{len(found)} endpoints are named {display_name!r} ({names}); set deploy.endpoint to the "
            "resource name of the one to use, or delete the others",
            endpoint=where,
            step="find the endpoint",
        )
    if found:
        return found[0]
    with _step(where, "create the endpoint"):
        return aiplatform.Endpoint.create(
            display_name=display_name, labels=labels or None, project=project, location=region
        )


def _refresh(endpoint):
    """The endpoint's resource as Vertex holds it now."""
    endpoint._sync_gca_resource()
    return endpoint.gca_resource


def current_split(endpoint) -> dict[str, int]:
    """``{deployed model ID: percent}`` of every deployed model, read from Vertex now (0 for a deployed
    model outside the split)."""
    resource = _refresh(endpoint)
    split = {m.id: 0 for m in resource.deployed_models}
    split.update({k: int(v) for k, v in resource.traffic_split.items()})
    return split


def _scaled(shares: dict[str, int], total: int) -> dict[str, int]:
    """``shares`` scaled to sum to ``total`` (largest remainder; ties by ID, so it is deterministic). All
    zero shares are shared equally."""
    if not shares:
        return {}
    weights = shares if sum(shares.values()) > 0 else {k: 1 for k in shares}
    whole = sum(weights.values())
    exact = {k: v * total / whole for k, v in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out


def _canary_split(before: dict[str, int], canary_percent: int) -> dict[str, int]:
    serving = {k: v for k, v in before.items() if v > 0}
    if not serving:
        return {NEW_MODEL_KEY: 100}
    return {**_scaled(serving, 100 - canary_percent), NEW_MODEL_KEY: canary_percent}


def deploy_canary(
    endpoint,
    model_resource_name: str,
    *,
    canary_percent: int,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: int,
    min_replicas: int = 1,
    max_replicas: int = 1,
    service_account: str = "",
) -> Deployed:
    """Deploy ``model_resource_name`` (``projects/../models/<name>@<version>``) with ``canary_percent`` of
    the traffic; the deployed models serving now share the rest in proportion to their shares (the new
    one gets 100 when nothing serves). On failure the endpoint is read back: a half-made deployment is
    undeployed and the split put back, and the DeployError says which of these happened."""
    from google.cloud import aiplatform

    name = endpoint.resource_name
    if not 1 <= int(canary_percent) <= 100:
        raise DeployError(
            f"canary_percent={canary_percent} is outside 1..100", endpoint=name, step="deploy the canary"
        )
    with _step(name, "read the traffic split"):
        before = current_split(endpoint)
    split = _canary_split(before, int(canary_percent))
    step = f"deploy {model_resource_name} with traffic split {json.dumps(split, sort_keys=True)}"
    try:
        model = aiplatform.Model(model_resource_name, project=endpoint.project, location=endpoint.location)
        endpoint.deploy(
            model=model,
            traffic_split=split,
            machine_type=machine_type,
            min_replica_count=min_replicas,
            max_replica_count=max_replicas,
            accelerator_type=accelerator_type or None,
            accelerator_count=accelerator_count if accelerator_type else None,
            service_account=service_account or None,
        )
    except Exception as e:
        raise _deploy_failed(endpoint, step, before, e) from e
    with _step(name, "read the traffic split after the deploy", before):
        after = current_split(endpoint)
    new = [k for k in after if k not in before]
    if len(new) != 1:
        raise DeployError(
            f"the deploy answered but {len(new)} new deployed models are on the endpoint ({new})",
            endpoint=name,
            step=step,
            split_before=before,
            split_after=after,
        )
    return Deployed(name, new[0], before, after)


def _deploy_failed(endpoint, step: str, before: dict[str, int], error: Exception) -> DeployError:
    """The DeployError of a failed deploy, after making sure nothing is left half-deployed."""
    name, cause = endpoint.resource_name, _cause(error)
    try:
        now = current_split(endpoint)
    except Exception as e:
        return DeployError(
            f"{cause}; the endpoint could not be read back ({_cause(e)}): check it with `gcloud ai endpoints "
            f"describe {name}` before deploying again",
            endpoint=name,
            step=step,
            split_before=before,
        )
    new = [k for k in now if k not in before]
    if not new and now == before:
        return DeployError(
            f"{cause}; nothing was deployed and the traffic split is unchanged",
            endpoint=name,
            step=step,
            split_before=before,
            split_after=now,
        )
    try:  # half-deployed (e.g. the request timed out but Vertex went on): undo it
        for deployed_model_id in new:
            undeploy(endpoint, deployed_model_id, restore=before)
        if current_split(endpoint) != before and before:
            set_split(endpoint, before)
        now = current_split(endpoint)
    except Exception as e:
        return DeployError(
            f"{cause}; LEFT HALF-DEPLOYED: deployed model(s) {new} appeared and could not be undone "
            f"({_cause(e)}); undeploy them (`gcloud ai endpoints undeploy-model {name} --deployed-model-id "
            "<id>`) and set the split back",
            endpoint=name,
            step=step,
            split_before=before,
            split_after=_safe_split(endpoint),
        )
    undone = f"deployed model(s) {new} appeared and were undeployed; " if new else ""
    return DeployError(
        f"{cause}; {undone}the traffic split was restored",
        endpoint=name,
        step=step,
        split_before=before,
        split_after=now,
    )


def _safe_split(endpoint) -> dict[str, int] | None:
    try:
        return current_split(endpoint)
    except Exception:
        return None


def set_split(endpoint, split: dict[str, int]) -> dict[str, int]:
    """Set the traffic split (every deployed model not named gets 0); returns it as read back."""
    name = endpoint.resource_name
    split = {str(k): int(v) for k, v in split.items()}
    with _step(name, "read the traffic split"):
        before = current_split(endpoint)
    step = f"set the traffic split to {json.dumps(split, sort_keys=True)}"
    unknown = sorted(set(split) - set(before))
    if unknown or sum(split.values()) != 100 or any(v < 0 for v in split.values()):
        why = (
            f"it names models not deployed here {unknown}"
            if unknown
            else "the shares must be >= 0 and add up to 100"
        )
        raise DeployError(why, endpoint=name, step=step, split_before=before, split_after=before)
    full = {k: split.get(k, 0) for k in before}
    with _step(name, step, before, lambda: current_split(endpoint)):
        endpoint.update(traffic_split=full)
        return current_split(endpoint)


def undeploy(endpoint, deployed_model_id: str, *, restore: dict[str, int] | None = None) -> dict[str, int]:
    """Undeploy a deployed model: its traffic first goes to the others (``restore``: the split to give
    them, else in proportion to their shares), then it is undeployed; returns the split left. The last
    deployed model leaves the endpoint with no traffic."""
    name = endpoint.resource_name
    with _step(name, "read the traffic split"):
        before = current_split(endpoint)
    step = f"undeploy deployed model {deployed_model_id}"
    if deployed_model_id not in before:
        raise DeployError(
            f"no deployed model {deployed_model_id} on the endpoint",
            endpoint=name,
            step=step,
            split_before=before,
            split_after=before,
        )
    others = {k: v for k, v in before.items() if k != deployed_model_id}
    remaining = None
    if others:
        wanted = {k: v for k, v in (restore or {}).items() if k in others and v > 0}
        remaining = wanted if sum(wanted.values()) == 100 else _scaled(others, 100)
        if before[deployed_model_id] > 0:  # move its traffic first, so the undeploy is allowed
            set_split(endpoint, remaining)
    with _step(name, step, before, lambda: current_split(endpoint)):
        endpoint.undeploy(deployed_model_id, traffic_split=remaining)
        return current_split(endpoint)


def rollback(endpoint, previous_split: dict[str, int], deployed_model_id: str) -> dict[str, int]:
    """Put the traffic split back to ``previous_split`` and undeploy the canary ``deployed_model_id``
    ("" or already gone: only the split); returns the split as read back. An empty ``previous_split``
    (the canary was the first deployment) leaves the endpoint with nothing deployed."""
    name = endpoint.resource_name
    with _step(name, "read the traffic split"):
        before = current_split(endpoint)
    previous = {str(k): int(v) for k, v in previous_split.items() if int(v) > 0}
    gone = sorted(set(previous) - set(before))
    if gone:
        raise DeployError(
            f"the previous split names deployed models no longer on the endpoint {gone}; nothing changed: "
            "set the split by hand with `slmforge deploy` or the console",
            endpoint=name,
            step="roll back",
            split_before=before,
            split_after=before,
        )
    if previous:
        set_split(endpoint, previous)
    if deployed_model_id and deployed_model_id in before:
        try:
            return undeploy(endpoint, deployed_model_id, restore=previous)
        except DeployError as e:
            raise DeployError(
                f"the traffic split was restored but the canary {deployed_model_id} is still deployed "
                f"with 0 % ({e}); undeploy it again",
                endpoint=name,
                step="roll back: undeploy the canary",
                split_before=before,
                split_after=_safe_split(endpoint),
            ) from e
    return current_split(endpoint)


# -- predictions -----------------------------------------------------------------------------------------
def _resource_name(endpoint: str, project: str, region: str) -> str:
    return endpoint if "/" in endpoint else f"projects/{project}/locations/{region}/endpoints/{endpoint}"


def _base_url(region: str, api_endpoint: str | None) -> str:
    from google.cloud.aiplatform import initializer

    base = api_endpoint or initializer.global_config.api_endpoint or f"{region}-aiplatform.googleapis.com"
    return base.rstrip("/") if "://" in base else f"https://{base.rstrip('/')}"


def raw_predict(
    endpoint_resource_name: str,
    body: dict,
    *,
    project: str,
    region: str,
    api_endpoint: str | None = None,
    timeout_s: float = 60,
) -> tuple[dict, str]:
    """``body`` as JSON through the endpoint's ``:rawPredict``: (the parsed JSON answer, the deployed model
    that served it, from Vertex's ``X-Vertex-AI-Deployed-Model-Id`` header, "" when absent). The SDK's own
    ``Endpoint.raw_predict`` always calls ``<region>-aiplatform.googleapis.com``; this honours
    ``api_endpoint`` (or ``aiplatform.init(api_endpoint=...)``) with the same authorized session."""
    import requests
    from google.auth.exceptions import DefaultCredentialsError
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud.aiplatform import initializer

    name = _resource_name(endpoint_resource_name, project, region)
    url = f"{_base_url(region, api_endpoint)}/v1/{name}:rawPredict"
    try:
        session = AuthorizedSession(initializer.global_config.credentials)
    except DefaultCredentialsError as e:
        raise EndpointError(f"{name}: {_cause(e)}") from e
    try:
        response = session.post(
            url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=timeout_s
        )
    except requests.Timeout as e:
        raise EndpointError(
            f"{name}: no answer in {timeout_s} s. The deployed model may still be starting or be overloaded: "
            "check its replicas and logs (`gcloud ai endpoints describe`), then retry or raise the timeout"
        ) from e
    except requests.RequestException as e:
        raise EndpointError(f"{name}: could not reach {url}: {e}") from e
    served_by = response.headers.get(DEPLOYED_MODEL_HEADER, "")
    if response.status_code >= 400:
        detail = response.text[:300]
        if response.status_code >= 500:
            what = (
                "Vertex or the serving container failed: check the endpoint's deployed models and their logs "
                "(Cloud Logging, resource aiplatform.googleapis.com/Endpoint), then retry"
            )
        elif response.status_code == 404:
            what = "no such endpoint: check deploy.endpoint, vertex.project and vertex.region"
        elif response.status_code in (401, 403):
            what = "not allowed: the caller needs roles/aiplatform.user (aiplatform.endpoints.predict)"
        else:
            what = "the request was refused: check the body against the serving container's route"
        by = f" (deployed model {served_by})" if served_by else ""
        raise EndpointError(f"{name}: HTTP {response.status_code}{by}: {detail}. {what}")
    try:
        return response.json(), served_by
    except ValueError as e:
        raise EndpointError(f"{name}: the answer is not JSON: {response.text[:200]!r}") from e


@dataclass
class VertexEndpoint:
    """A Vertex endpoint as components/deploy/checks.py ``Endpoint``: ``ask`` answers with the deployed
    model that served it (``Answer.served_by``)."""

    resource_name: str
    project: str
    region: str
    api_endpoint: str | None = None
    timeout_s: float = 60.0

    def ask(self, body: dict) -> Answer:
        reply, served_by = raw_predict(
            self.resource_name,
            body,
            project=self.project,
            region=self.region,
            api_endpoint=self.api_endpoint,
            timeout_s=self.timeout_s,
        )
        return answer_of(reply, served_by)
