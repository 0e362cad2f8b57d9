"""Deployments: deploy a registry version with a smoke check, promote it, roll it back, check it for drift.

A deployment is a folder under ``deploy.state`` (default ``$SLMFORGE_HOME/deployments/<name>``):
``deployment.json`` (target, endpoint, the version serving and the canary, the traffic split, the smoke
check at deploy time with its per-row scores, and the history of every action with who, when, the split
before and after and its reason code) and ``gold.jsonl`` (the pinned gold set: a seeded sample of the
version's own eval predictions, so the smoke and drift checks score the rows offline evaluation scored,
against the offline answers). Every action also appends an event (components/common/events.py
DEPLOY_* / DEPLOYMENT_* codes) to ``events.jsonl``.

Targets: ``local`` (a running OpenAI-compatible server, e.g. `slmforge serve`: one model, no traffic
split; deploy records it and smoke-checks it) and ``vertex`` (an endpoint with a canary split next to the
version serving now; vertex_endpoint.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.events import event, write_events
from components.common.options import StepOptions
from components.common.task import METRICS
from components.deploy.checks import CheckResult, Endpoint, drift_verdicts, gold_set, smoke_check


class DeployRefused(RuntimeError):
    """An action refused (a red smoke check, nothing to roll back, no recorded deployment)."""


@dataclass
class Deployment:
    name: str
    target: str  # local | vertex
    endpoint: str  # local: URL; vertex: endpoint resource name
    model_uri: str  # the registry version deployed last (models:/NAME/VERSION or Vertex resource@version)
    deployed_model_id: str = ""  # vertex: the deployed model of that version ("" locally)
    serving: str = ""  # the deployed model id serving before it (vertex canary), "" when none
    split: dict[str, int] = field(default_factory=dict)  # deployed model id -> % now
    status: str = "new"  # canary | promoted | rejected | rolled_back
    smoke: dict[str, Any] = field(default_factory=dict)  # CheckResult.summary() at deploy time
    smoke_per_example: dict[str, list[float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def smoke_passed(self) -> bool:
        return bool(self.smoke.get("passed"))


class DeploymentStore:
    """Deployments by name under ``root`` (one folder each): a local folder, or a gs:// prefix (what a
    scheduled drift check in CI reads), mirrored in a local folder and uploaded after every write."""

    def __init__(self, root: str | Path):
        self.remote = str(root) if str(root).startswith("gs://") else ""
        if self.remote:
            import tempfile

            self.root = Path(tempfile.mkdtemp(prefix="slmforge-deployments-"))
        else:
            self.root = Path(root)
        self._fetched: set[str] = set()

    def folder(self, name: str) -> Path:
        return self.root / name

    def _remote(self, name: str) -> str:
        return f"{self.remote.rstrip('/')}/{name}"

    def _fetch(self, name: str) -> None:
        if self.remote and name not in self._fetched:
            from components.common.gcs import download_prefix

            try:
                download_prefix(self._remote(name), self.folder(name))
            except FileNotFoundError:
                pass  # a new deployment
            self._fetched.add(name)

    def _upload(self, name: str, *files: str) -> None:
        if not self.remote:
            return
        from google.cloud import storage

        from components.common.gcs import split_uri

        bucket_name, prefix = split_uri(self._remote(name))
        bucket = storage.Client().bucket(bucket_name)
        for file in files:
            bucket.blob(f"{prefix}/{file}").upload_from_filename(str(self.folder(name) / file))

    def load(self, name: str) -> Deployment:
        self._fetch(name)
        path = self.folder(name) / "deployment.json"
        if not path.is_file():
            where = self.remote or self.root
            raise DeployRefused(f"no deployment named {name!r} under {where}: deploy it first")
        return Deployment(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, deployment: Deployment) -> None:
        self._fetch(deployment.name)
        folder = self.folder(deployment.name)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(deployment.__dict__, indent=2, sort_keys=True) + "\n"
        tmp = folder / "deployment.json.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / "deployment.json")  # never a half-written record
        self._upload(deployment.name, "deployment.json")

    def save_gold(self, name: str, gold: list[dict]) -> None:
        self._fetch(name)
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gold), encoding="utf-8")
        self._upload(name, "gold.jsonl")

    def gold(self, name: str) -> list[dict]:
        self._fetch(name)
        lines = (self.folder(name) / "gold.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def record(self, deployment: Deployment, code: str, message: str, **details: Any) -> None:
        """One action: on the deployment's history and in its events stream."""
        from components.register.promotion import actor

        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": actor(),
            "code": code,
            "message": message,
            **details,
        }
        deployment.history.append(entry)
        self.save(deployment)
        events = self.folder(deployment.name) / "events.jsonl"
        write_events(
            events, events, [event("deploy", code, 1, message, deployment=deployment.name, **details)]
        )
        self._upload(deployment.name, "events.jsonl")


@dataclass(frozen=True)
class CheckSettings:
    """How the gold set is asked and judged: the offline evaluation's prompt, decoding and the gate's
    threshold rules (from the config), and the deployment's tolerances."""

    task: Any  # TaskSpec
    system_prompt: str
    decoding: str
    max_new_tokens: int
    rules: list[dict]
    parity_tolerance: float
    drift_margin: float
    bootstrap: dict[str, Any]  # gates.bootstrap: resamples, seed, confidence
    gold_rows: int


def _smoke(endpoint: Endpoint, gold: list[dict], s: CheckSettings, served_by: str = "", rounds: int = 1):
    return smoke_check(
        endpoint,
        gold,
        task=s.task,
        system_prompt=s.system_prompt,
        decoding=s.decoding,
        max_new_tokens=s.max_new_tokens,
        rules=s.rules,
        parity_tolerance=s.parity_tolerance,
        served_by=served_by,
        max_rounds=rounds,
    )


def deploy_local(
    store: DeploymentStore,
    name: str,
    url: str,
    model_uri: str,
    predictions: str | Path,
    settings: CheckSettings,
    endpoint: Endpoint,
) -> tuple[Deployment, CheckResult]:
    """Record ``url`` (a server of ``model_uri``) as deployment ``name`` and smoke-check it; a red check
    leaves it ``rejected`` (there is no traffic to shift on a local target) and says why."""
    gold = gold_set(predictions, settings.gold_rows)
    store.save_gold(name, gold)
    d = Deployment(name, "local", url, model_uri, split={url: 100})
    result = _smoke(endpoint, gold, settings)
    d.smoke, d.smoke_per_example = result.summary(), result.per_example
    d.status = "promoted" if result.passed else "rejected"
    code = "DEPLOYED" if result.passed else "DEPLOYMENT_SMOKE_FAILED"
    store.record(d, code, f"{model_uri} at {url}: smoke check {'passed' if result.passed else 'failed'}")
    return d, result


def drift_check(store: DeploymentStore, name: str, settings: CheckSettings, endpoint: Endpoint) -> dict:
    """Ask the live endpoint the gold set again and compare per row with the deploy-time smoke check;
    records DEPLOYMENT_DRIFT_DETECTED, DEPLOYMENT_DRIFT_CHECK_FAILED (requests unanswered) or
    DEPLOYMENT_NO_DRIFT. Returns {drifted, failed, verdicts, metrics}."""
    d = store.load(name)
    if not d.smoke_per_example:
        raise DeployRefused(f"deployment {name} has no smoke check recorded at deploy time to compare with")
    result = _smoke(endpoint, store.gold(name), settings)
    b = settings.bootstrap
    headline = [m for m in METRICS.get(settings.task.type, ()) if m in result.per_example]
    drifted, verdicts = drift_verdicts(
        result.per_example,
        d.smoke_per_example,
        headline,
        margin=settings.drift_margin,
        resamples=b.get("resamples", 2000),
        seed=b.get("seed", 0),
        confidence=b.get("confidence", 0.95),
    )
    failed = bool(result.errors) or result.rows != len(store.gold(name))
    if failed:
        code, message = "DEPLOYMENT_DRIFT_CHECK_FAILED", "; ".join(result.reasons[:2])
    elif drifted:
        code = "DEPLOYMENT_DRIFT_DETECTED"
        message = "; ".join(v["sentence"] for v in verdicts if v["drifted"])
    else:
        code, message = "DEPLOYMENT_NO_DRIFT", f"{len(verdicts)} metrics within the margin"
    store.record(d, code, message, metrics=result.metrics)
    return {
        "drifted": drifted,
        "failed": failed,
        "verdicts": verdicts,
        "metrics": result.metrics,
        "code": code,
    }


@dataclass(frozen=True)
class VertexTarget:
    """Where and how a version is deployed on Vertex AI (the config's vertex and deploy sections)."""

    project: str
    region: str
    accelerator_type: str
    accelerator_count: int
    min_replicas: int = 1
    max_replicas: int = 1
    canary_percent: int = 10
    service_account: str = ""
    timeout_s: float = 60.0
    api_endpoint: str | None = None  # None = the SDK's (aiplatform.init's, else Google's regional one)

    @property
    def machine_type(self) -> str:
        from components.preflight.prices import machine_type_for

        machine = machine_type_for(self.accelerator_type, self.accelerator_count)
        if machine is None:
            raise DeployRefused(
                f"no machine type carries {self.accelerator_count} x {self.accelerator_type} "
                "(components/preflight/prices.py ACCELERATORS)"
            )
        return machine

    def cost(self) -> str:
        """What keeping the endpoint up costs: min_replicas machines around the clock, from the price table
        (components/preflight/prices.py), in words with its basis."""
        from components.preflight.prices import hourly_price

        machine = self.machine_type
        price, basis = hourly_price(machine)
        what = f"{self.min_replicas} x {machine} ({self.accelerator_count} x {self.accelerator_type})"
        if price is None:
            return f"{what}: {basis}"
        hourly = price * self.min_replicas
        return f"{what}: ${hourly:.4f}/h, ${hourly * 730:,.0f} per month of 730 h (basis: {basis})"

    def endpoint(self, resource_name: str):
        from components.deploy.vertex_endpoint import VertexEndpoint

        return VertexEndpoint(resource_name, self.project, self.region, self.api_endpoint, self.timeout_s)


def smoke_rounds(canary_percent: int) -> int:
    """Passes over the gold set so that a canary with ``canary_percent`` of the traffic answers every row:
    the endpoint routes each request by its split, so each pass reaches the canary with that share."""
    return min(60, 3 * -(-100 // canary_percent))


def deploy_vertex(
    store: DeploymentStore,
    name: str,
    model_uri: str,
    predictions: str | Path,
    settings: CheckSettings,
    target: VertexTarget,
) -> tuple[Deployment, CheckResult | None]:
    """Deploy the Vertex model version ``model_uri`` (``projects/../models/ID@VERSION``) to the endpoint
    ``name`` (created when missing) as a canary with ``target.canary_percent`` of the traffic next to the
    version serving now, and smoke-check the canary's own answers (``X-Vertex-AI-Deployed-Model-Id``). Red:
    the split is restored and the canary undeployed (DEPLOYMENT_SMOKE_FAILED). A deploy the endpoint
    refused leaves the split as it was (DEPLOYMENT_FAILED). Deployed models left at 0% by an earlier
    promote are undeployed first (they are billed while deployed)."""
    from components.deploy import vertex_endpoint as vx

    machine = target.machine_type
    gold = gold_set(predictions, settings.gold_rows)
    try:
        d = store.load(name)
    except DeployRefused:
        d = Deployment(name, "vertex", "", model_uri)
    store.save_gold(name, gold)
    try:
        endpoint = vx.ensure_endpoint(name, project=target.project, region=target.region)
        d.endpoint = endpoint.resource_name
        for idle, share in vx.current_split(endpoint).items():
            if share == 0:
                vx.undeploy(endpoint, idle)
        deployed = vx.deploy_canary(
            endpoint,
            model_uri,
            canary_percent=target.canary_percent,
            machine_type=machine,
            accelerator_type=target.accelerator_type,
            accelerator_count=target.accelerator_count,
            min_replicas=target.min_replicas,
            max_replicas=target.max_replicas,
            service_account=target.service_account,
        )
    except vx.DeployError as e:
        d.model_uri, d.status = model_uri, "failed"
        store.record(d, "DEPLOYMENT_FAILED", str(e), split_before=e.split_before, split_after=e.split_after)
        raise DeployRefused(str(e)) from e
    d.model_uri, d.deployed_model_id, d.split = model_uri, deployed.deployed_model_id, deployed.split_after
    d.serving = ",".join(k for k, v in deployed.split_before.items() if v > 0)
    result = _smoke(
        target.endpoint(d.endpoint),
        gold,
        settings,
        served_by=deployed.deployed_model_id,
        rounds=smoke_rounds(target.canary_percent),
    )
    d.smoke, d.smoke_per_example = result.summary(), result.per_example
    split = {"split_before": deployed.split_before, "split_after": deployed.split_after}
    if result.passed:
        d.status = "canary"
        store.record(
            d, "DEPLOYED", f"{model_uri} as a {target.canary_percent}% canary on {d.endpoint}", **split
        )
        return d, result
    restored = vx.rollback(endpoint, deployed.split_before, deployed.deployed_model_id)
    d.status, d.split, d.deployed_model_id = "rejected", restored, ""
    store.record(
        d,
        "DEPLOYMENT_SMOKE_FAILED",
        f"{model_uri}: smoke check failed; canary undeployed, split restored to {restored}",
        split_before=deployed.split_before,
        split_after=restored,
    )
    return d, result


def promote(store: DeploymentStore, name: str, target: VertexTarget) -> Deployment:
    """Give the canary all the traffic, only when its smoke check is green (DEPLOYMENT_PROMOTE_BLOCKED
    otherwise). The version it replaces stays deployed at 0%, so a rollback is instant (billed until the
    next deploy undeploys it)."""
    from components.deploy import vertex_endpoint as vx

    d = store.load(name)
    if d.target != "vertex" or d.status != "canary" or not d.smoke_passed:
        why = f"status {d.status}, smoke {'green' if d.smoke_passed else 'not green'}"
        store.record(d, "DEPLOYMENT_PROMOTE_BLOCKED", f"promote refused: {why}")
        raise DeployRefused(f"deployment {name}: promote refused ({why}); deploy a version that passes first")
    endpoint = vx.ensure_endpoint(d.endpoint, project=target.project, region=target.region)
    before = vx.current_split(endpoint)
    after = vx.set_split(endpoint, {k: 100 if k == d.deployed_model_id else 0 for k in before})
    d.split, d.status = after, "promoted"
    store.record(
        d,
        "DEPLOYMENT_PROMOTED",
        f"{d.model_uri} takes all the traffic",
        split_before=before,
        split_after=after,
    )
    return d


def rollback(store: DeploymentStore, name: str, target: VertexTarget) -> Deployment:
    """Restore the traffic split before the last deploy or promote: a canary is undeployed; after a
    promote the version it replaced (kept at 0%) serves again."""
    from components.deploy import vertex_endpoint as vx

    d = store.load(name)
    last = next((h for h in reversed(d.history) if h["code"] in ("DEPLOYED", "DEPLOYMENT_PROMOTED")), None)
    if d.target != "vertex" or last is None or d.status not in ("canary", "promoted"):
        raise DeployRefused(f"deployment {name} ({d.target}, {d.status}): nothing to roll back")
    endpoint = vx.ensure_endpoint(d.endpoint, project=target.project, region=target.region)
    previous = {k: v for k, v in last["split_before"].items()}
    if d.status == "canary":
        after = vx.rollback(endpoint, previous, d.deployed_model_id)
        d.status, d.deployed_model_id = "rolled_back", ""
    else:
        after = vx.set_split(endpoint, {**{k: 0 for k in vx.current_split(endpoint)}, **previous})
        d.status = "canary" if previous.get(d.deployed_model_id) else "rolled_back"
    before, d.split = d.split, after
    store.record(
        d, "DEPLOYMENT_ROLLED_BACK", f"split restored to {after}", split_before=before, split_after=after
    )
    return d


# -- the deploy step's options: one path for `slmforge deploy`, `slmforge drift-check` and the pipeline --
@dataclass(frozen=True)
class DeployOptions(StepOptions):
    """deploy.* (components/common/config.py DeployConfig) with what the checks compare against: the task,
    offline evaluation's prompt and decoding, the gate's rules and bootstrap, and the registry. Built from
    step inputs (``from_inputs``) by the pipeline's deploy step and, through ``stage_options``, by the CLI."""

    JSON_INPUTS = ("labels", "output_schema", "gate_rules", "bootstrap", "registry")

    after_register: bool
    target: str
    endpoint: str
    accelerator_type: str
    accelerator_count: int
    service_account: str
    min_replicas: int
    max_replicas: int
    canary_percent: int
    gold_rows: int
    parity_tolerance: float
    drift_margin: float
    timeout_s: float
    state: str
    task_type: str
    output_schema: dict | None
    labels: list[str] | None
    system_prompt: str
    decoding: str
    max_new_tokens: int
    gate_rules: list[dict]
    bootstrap: dict[str, Any]
    registry: dict[str, str]
    model_name: str

    @property
    def settings(self) -> CheckSettings:
        from components.common.scoring import TaskSpec

        return CheckSettings(
            task=TaskSpec(self.task_type, self.output_schema, list(self.labels or [])),
            system_prompt=self.system_prompt,
            decoding=self.decoding,
            max_new_tokens=self.max_new_tokens,
            rules=self.gate_rules,
            parity_tolerance=self.parity_tolerance,
            drift_margin=self.drift_margin,
            bootstrap=self.bootstrap,
            gold_rows=self.gold_rows,
        )

    @property
    def vertex(self) -> VertexTarget:
        return VertexTarget(
            project=self.registry.get("project", ""),
            region=self.registry.get("region", ""),
            accelerator_type=self.accelerator_type,
            accelerator_count=self.accelerator_count,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            canary_percent=self.canary_percent,
            service_account=self.service_account,
            timeout_s=self.timeout_s,
        )

    @property
    def name(self) -> str:
        """A deployment is named by its endpoint (vertex: the display name), else the model name."""
        return self.endpoint if self.target == "vertex" and self.endpoint else self.model_name

    def store(self) -> DeploymentStore:
        from components.common.home import slmforge_home

        return DeploymentStore(self.state or slmforge_home() / "deployments")

    def endpoint_of(self, deployment: Deployment | None = None) -> Endpoint:
        """The endpoint a deployment answers at (vertex: through ``:rawPredict``), else the local URL."""
        from components.deploy.checks import LocalEndpoint

        if deployment is not None and deployment.target == "vertex":
            return self.vertex.endpoint(deployment.endpoint)
        url = deployment.endpoint if deployment else (self.endpoint or "http://127.0.0.1:8000")
        return LocalEndpoint(url, self.timeout_s)


def deploy_version(
    version: Any, predictions: str | Path, opts: DeployOptions
) -> tuple[Deployment, CheckResult]:
    """Deploy the registry ``version`` (components/register ModelVersion) to ``opts.target`` with its
    smoke check on a gold set from ``predictions`` (deploy_vertex / deploy_local)."""
    store = opts.store()
    if opts.target == "vertex":
        return deploy_vertex(store, opts.name, version.uri, predictions, opts.settings, opts.vertex)
    endpoint = opts.endpoint_of()
    return deploy_local(store, opts.name, endpoint.url, version.uri, predictions, opts.settings, endpoint)


def deploy_step(model_uri: str, predictions: str | Path, opts: DeployOptions, record: str | Path) -> str:
    """The finetune pipeline's deploy step: deploy the version register made (Vertex AI, a canary with a
    smoke check) and write the deployment record to ``record``. Returns its status (canary, rejected);
    a red smoke check rolls the canary back and then fails the step, naming every failed check, so the
    run says the version is registered but not serving."""
    if not opts.after_register:
        raise DeployRefused(
            "deploy.after_register is off: the pipeline runs the deploy step only when it is on"
        )
    from components.common.vertex import vertex_init
    from components.register.core import version_of
    from components.register.registries import open_registry

    vertex_init(opts.registry.get("project", ""), opts.registry.get("region", ""))
    version = version_of(model_uri, open_registry(**opts.registry))
    d, result = deploy_version(version, predictions, opts)
    Path(record).write_text(json.dumps(d.__dict__, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not result.passed:
        raise DeployRefused(
            f"{model_uri}: the smoke check on {d.endpoint} failed; canary undeployed, traffic split {d.split} "
            "(DEPLOYMENT_SMOKE_FAILED):\n  "
            + "\n  ".join(line for line in result.reasons if line.startswith("FAIL"))
        )
    return d.status
