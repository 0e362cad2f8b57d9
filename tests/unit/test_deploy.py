"""Deployments (components/deploy): the smoke check with serving parity, the drift check, the deployment
record and history, and `slmforge deploy` / `slmforge drift-check` on a local target: a real
`slmforge serve` of the tiny model, its real offline evaluation as the gold set, a real MLflow registry."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from loopback_vertex import LoopbackJSON
from typer.testing import CliRunner

from components.common.scoring import TaskSpec
from components.deploy.checks import (
    LocalEndpoint,
    drift_verdicts,
    gold_set,
    request_body,
    smoke_check,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"
SYSTEM = "You turn a travel request into a JSON list of commands."


VERTEX_REGISTRY = ("vertex.project=p", "registry.backend=vertex", "vertex.pipeline_root=gs://b/root")


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        (("deploy.canary_percent=0",), "DEPLOY-001"),
        (("deploy.min_replicas=2", "deploy.max_replicas=1"), "DEPLOY-001"),
        (("deploy.accelerator_type=NVIDIA_NOPE",), "DEPLOY-001"),
        (("deploy.after_register=true",), "DEPLOY-002"),  # the mlflow registry
        ((*VERTEX_REGISTRY, "deploy.after_register=true"), "DEPLOY-002"),  # no gs:// state
        (
            (*VERTEX_REGISTRY, "deploy.after_register=true", "deploy.state=gs://b/d", "deploy.target=local"),
            "DEPLOY-002",
        ),
    ],
)
def test_bad_deploy_settings_name_their_rule(overrides, rule):
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(DEMO, overrides)
    assert f"[{rule}]" in str(e.value) and "Fix:" in str(e.value), str(e.value)
    fine = (*VERTEX_REGISTRY, "deploy.after_register=true", "deploy.state=gs://b/deployments")
    assert load_config(DEMO, fine).deploy.after_register


def test_deploy_cost_is_the_price_table_times_the_replicas_kept_up(tmp_path):
    from components.preflight.prices import hourly_price, machine_type_for

    price, _ = hourly_price(machine_type_for("NVIDIA_L4", 1))
    sets = ("--set", "deploy.min_replicas=2", "--set", "deploy.max_replicas=3")
    code, out = _cli("deploy", "cost", "-c", DEMO, *sets, home=tmp_path)
    assert code == 0 and out.startswith("2 x g2-standard-8 (1 x NVIDIA_L4)"), out
    assert f"${2 * price:.4f}/h" in out and f"${2 * price * 730:,.0f} per month" in out, out
    code, out = _cli("deploy", "cost", "-c", DEMO, home=tmp_path)  # the README's figure is this output's
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert code == 0 and f"`{out.split(' (basis')[0].strip()}`" in readme, out
    code, out = _cli("deploy", "cost", "-c", DEMO, "--set", "deploy.accelerator_count=3", home=tmp_path)
    assert code == 1 and "no machine type carries 3 x NVIDIA_L4" in out, out


def test_request_body_carries_the_offline_prompt_and_constraint(travel_schema):
    row = {"prompt": "Book a hotel", "history": json.dumps([{"role": "user", "content": "hi"}])}
    structured = TaskSpec("structured", travel_schema, [])
    body = request_body(row, system_prompt=SYSTEM, task=structured, decoding="both", max_new_tokens=64)
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert body["messages"][-1] == {"role": "user", "content": "Book a hotel"}
    assert body["temperature"] == 0 and body["max_tokens"] == 64
    assert body["response_format"]["json_schema"]["schema"] == travel_schema
    free = request_body(row, system_prompt=SYSTEM, task=structured, decoding="free", max_new_tokens=64)
    assert "response_format" not in free
    labels = TaskSpec("classification", None, ["a", "b"])
    body = request_body(row, system_prompt="", task=labels, decoding="constrained", max_new_tokens=4)
    assert body["structured_outputs"] == {"choice": ["a", "b"]}


def test_drift_is_a_confident_drop_beyond_the_margin():
    then = {"exact_match": [1.0] * 40}
    drifted, verdicts = drift_verdicts(
        {"exact_match": [0.0] * 20 + [1.0] * 20}, then, ["exact_match"], margin=0.02
    )
    assert drifted and verdicts[0]["diff"] == pytest.approx(-0.5) and verdicts[0]["ci"][1] < -0.02
    same, verdicts = drift_verdicts(dict(then), then, ["exact_match"], margin=0.02)
    assert not same and verdicts[0]["sentence"].startswith("OK exact_match")
    one_row = {"exact_match": [0.0] + [1.0] * 39}  # one row of 40: inside any sensible margin's CI
    assert not drift_verdicts(one_row, then, ["exact_match"], margin=0.05)[0]


def test_gold_set_is_a_seeded_ordered_sample(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "predictions.parquet"
    n = 50
    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(n)],
                "history": ["[]"] * n,
                "prompt": [f"p{i}" for i in range(n)],
                "expected": ["e"] * n,
                "predicted": ["e"] * n,
                "score/exact_match": [1.0] * n,
            }
        ),
        path,
    )
    first, again = gold_set(path, 10), gold_set(path, 10)
    assert first == again and len(first) == 10
    assert [int(r["id"][1:]) for r in first] == sorted(int(r["id"][1:]) for r in first)
    assert len(gold_set(path, 500)) == n


def test_an_endpoint_that_fails_or_breaks_the_schema_fails_the_smoke_check(travel_schema):
    """5xx and timeouts are errors, never scores; answers that break the schema fail the rule and parity."""
    task = TaskSpec("structured", travel_schema, [])
    gold = [
        {"id": f"r{i}", "history": "[]", "prompt": f"book a hotel {i}", "expected": "[]", "predicted": "[]"}
        for i in range(4)
    ]
    rules = [{"metric": "schema_validity", "min": 1.0}]
    kw = dict(
        task=task, system_prompt=SYSTEM, decoding="both", max_new_tokens=32, rules=rules, parity_tolerance=0.0
    )

    def broken(path, body):
        return 200, {"choices": [{"message": {"content": "not json"}, "finish_reason": "stop"}]}

    server = LoopbackJSON(broken)
    try:
        server.faults.extend([503, 503])
        result = smoke_check(LocalEndpoint(server.url, timeout_s=5), gold, **kw)
    finally:
        server.close()
    assert not result.passed
    assert len(result.errors) == 2 and "HTTP 503" in result.errors[0]
    assert result.rows == 2 and result.metrics["schema_validity"] == 0.0
    assert any(r.startswith("FAIL schema_validity") for r in result.reasons), result.reasons
    assert result.parity_differs == 1.0 and result.differing[0]["served"] == "not json"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_model, travel_rows, travel_schema):
    """The tiny model, evaluated offline on 12 travel rows (its predictions are the gold set's source) and
    registered in a real MLflow sqlite registry with that lineage tag, as a pipeline run registers it."""
    from components.common.tables import write_rows
    from components.evaluate.core import evaluate
    from components.register.backends import NewVersion
    from components.register.registries import open_registry

    work = tmp_path_factory.mktemp("deploy")
    rows = [{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows[:12]]
    write_rows(rows, work / "eval.parquet")
    predictions = work / "predictions.parquet"
    task = TaskSpec("structured", travel_schema, [])
    evaluate(
        str(tiny_model), work / "eval.parquet", SYSTEM, task, predictions, max_new_tokens=32, decoding="both"
    )
    uri = f"sqlite:///{work / 'mlflow.db'}"
    registry = open_registry("mlflow", tracking_uri=uri)
    tags = {"lineage.eval_exported.uri": str(predictions), "gate_passed": "true"}
    version, _ = registry.register(tiny_model, NewVersion("travel-commands", "sha-1", tags))
    registry.set_alias("travel-commands", "candidate", version.version)
    return {"tracking_uri": uri, "home": work, "model": tiny_model}


def _cli(*args, home: Path):
    from pipelines.cli import app

    result = CliRunner().invoke(
        app, [str(a) for a in args], env={"COLUMNS": "200", "SLMFORGE_HOME": str(home)}
    )
    return result.exit_code, result.output


def test_deploy_locally_smoke_checks_a_served_version_then_drift_checks_it(registered, tmp_path):
    """`slmforge deploy models:/travel-commands@candidate` against a real `slmforge serve` of that version:
    the gold set (a sample of its own eval predictions) answered with the same prompt and constraint is
    identical row by row (parity), the deployment and its history are recorded; the gate's thresholds hold
    the smoke check (the untrained model fails exact_match >= 0.9 and is rejected); `drift-check` finds
    no drift on the same server, drift against confidently better deploy-time scores, and fails when the
    server is gone."""
    from components.deploy.serve import ChatServer

    state = tmp_path / "deployments"
    common = [
        "--set", f"registry.tracking_uri={registered['tracking_uri']}",
        "--set", "deploy.target=local",
        "--set", f"deploy.state={state}",
        "--set", "deploy.gold_rows=8",
        "--set", "eval.max_new_tokens=32",
    ]  # fmt: skip
    with ChatServer(registered["model"], max_new_tokens=32) as server:
        args = ["-c", DEMO, *common, "--set", f"deploy.endpoint={server.url}"]
        code, out = _cli("deploy", "models:/travel-commands@candidate", *args, home=registered["home"])
        assert code == 1, out  # the demo's gate: exact_match >= 0.9, which an untrained model misses
        assert "FAIL exact_match" in out and "PASS serving parity: 0 of 8 answers differ" in out, out
        record = json.loads((state / "travel-commands" / "deployment.json").read_text())
        assert record["status"] == "rejected" and record["history"][-1]["code"] == "DEPLOYMENT_SMOKE_FAILED"

        green = [*args, "--set", "gates.rules=[{metric: schema_validity, min: 0.0}]"]
        code, out = _cli("deploy", "models:/travel-commands@candidate", *green, home=registered["home"])
        assert code == 0, out
        assert "deployment travel-commands: promoted" in out
        gold = (state / "travel-commands" / "gold.jsonl").read_text().splitlines()
        assert len(gold) == 8
        code, out = _cli("drift-check", *green, home=registered["home"])
        assert code == 0 and "DEPLOYMENT_NO_DRIFT" in out, out

        # drift: the recorded deploy-time scores say every gold row was right; the server's are not
        path = state / "travel-commands" / "deployment.json"
        record = json.loads(path.read_text())
        record["smoke_per_example"] = {k: [1.0] * len(v) for k, v in record["smoke_per_example"].items()}
        path.write_text(json.dumps(record))
        code, out = _cli("drift-check", *green, home=registered["home"])
        assert code == 1 and "DRIFT exact_match" in out and "DEPLOYMENT_DRIFT_DETECTED" in out, out

    # the server is gone: the drift check fails, saying so, and is recorded
    code, out = _cli("drift-check", *green, home=registered["home"])
    assert code == 1 and "DEPLOYMENT_DRIFT_CHECK_FAILED" in out, out
    events = [json.loads(x) for x in (state / "travel-commands" / "events.jsonl").read_text().splitlines()]
    assert [e["code"] for e in events] == [
        "DEPLOYMENT_SMOKE_FAILED",
        "DEPLOYED",
        "DEPLOYMENT_NO_DRIFT",
        "DEPLOYMENT_DRIFT_DETECTED",
        "DEPLOYMENT_DRIFT_CHECK_FAILED",
    ]
    code, out = _cli("deploy", "status", *green, home=registered["home"])
    assert code == 0 and "DEPLOYED" in out


def test_serve_fetches_a_registry_version_once(registered, tmp_path, monkeypatch):
    """`slmforge serve models:/NAME@ALIAS` resolves the alias in the real MLflow registry and downloads that
    version once under $SLMFORGE_HOME/serve/NAME/VERSION; a folder is served where it is."""
    from pipelines.cli_serve import resolve_model

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path))
    spec = {"backend": "mlflow", "tracking_uri": registered["tracking_uri"]}
    folder = resolve_model("models:/travel-commands@candidate", spec)
    assert Path(folder) == tmp_path / "serve" / "travel-commands" / "1"
    assert any(Path(folder).rglob("config.json"))
    stamp = Path(folder).stat().st_mtime_ns
    assert resolve_model("models:/travel-commands/1", spec) == folder
    assert Path(folder).stat().st_mtime_ns == stamp  # not fetched again: a version's weights never change
    assert resolve_model(str(registered["model"]), spec) == str(registered["model"])
    with pytest.raises(FileNotFoundError, match="no such version"):
        resolve_model("models:/travel-commands@champion", spec)


PROJECT, REGION = "test-project", "us-central1"
MODEL = f"projects/{PROJECT}/locations/{REGION}/models/travel"


@pytest.fixture()
def vertex():
    """The loopback Vertex API, the real SDK pointed at it, and three versions of ``travel`` registered
    with the vLLM OpenAI route (components/register/vertex_registry.py)."""
    from loopback_vertex import LoopbackVertex

    from components.register.vertex_registry import PREDICT_ROUTE

    with LoopbackVertex() as api, api.sdk(PROJECT, REGION):
        spec = {"imageUri": "vllm", "predictRoute": PREDICT_ROUTE}
        api.models.seed(f"projects/{PROJECT}/locations/{REGION}", "travel", 3, spec)
        yield api


@contextmanager
def three_versions_served(vertex, model: Path):
    """Versions 1 and 2 of ``travel`` answered by a real `slmforge serve` of ``model``, version 3 by a
    server that answers "no" to everything (it fails any smoke check)."""
    from components.deploy.serve import ChatServer

    def nonsense(path, body):
        return 200, {"choices": [{"message": {"content": "no"}, "finish_reason": "stop"}]}

    bad = LoopbackJSON(nonsense)
    try:
        with ChatServer(model, max_new_tokens=32) as server:
            for version in (1, 2):
                vertex.endpoints.serve(f"{MODEL}@{version}", server.url)
            vertex.endpoints.serve(f"{MODEL}@3", bad.url)
            yield
    finally:
        bad.close()


def test_vertex_canary_is_smoke_checked_then_promoted_and_rolled_back(
    vertex, registered, tmp_path, travel_schema
):
    """Versions deployed to a Vertex endpoint (the real SDK, the loopback API forwarding `:rawPredict` to a
    real `slmforge serve` of the tiny model): the first takes all the traffic; the second is a 50% canary
    whose own answers (X-Vertex-AI-Deployed-Model-Id) pass the smoke check with parity; promote gives it
    100% (the first stays at 0%); rollback restores 50/50, a second rollback undeploys the canary. A canary
    that answers nonsense fails its smoke check and is rolled back; a deploy the endpoint refuses leaves the
    split as it was. Every action is on the history and in the events stream."""
    from components.deploy.actions import (
        CheckSettings,
        DeploymentStore,
        DeployRefused,
        VertexTarget,
        deploy_vertex,
        promote,
        rollback,
    )

    store = DeploymentStore(tmp_path / "deployments")
    settings = CheckSettings(
        task=TaskSpec("structured", travel_schema, []),
        system_prompt=SYSTEM,
        decoding="both",
        max_new_tokens=32,
        rules=[{"metric": "schema_validity", "min": 0.0}],
        parity_tolerance=0.0,
        drift_margin=0.02,
        bootstrap={},
        gold_rows=6,
    )
    target = VertexTarget(PROJECT, REGION, "NVIDIA_L4", 1, canary_percent=50)
    predictions = registered["home"] / "predictions.parquet"

    with three_versions_served(vertex, registered["model"]):
        first, result = deploy_vertex(store, "travel", f"{MODEL}@1", predictions, settings, target)
        one = first.deployed_model_id
        assert result.passed and first.split == {one: 100} and first.status == "canary"
        d, result = deploy_vertex(store, "travel", f"{MODEL}@2", predictions, settings, target)
        two = d.deployed_model_id
        assert result.passed and result.rows == 6 and result.parity_differs == 0.0, result.reasons
        assert d.split == {one: 50, two: 50} == vertex.endpoints.split(d.endpoint)
        assert promote(store, "travel", target).split == {one: 0, two: 100}
        assert rollback(store, "travel", target).split == {one: 50, two: 50}
        d = rollback(store, "travel", target)
        assert d.split == {one: 100} and d.status == "rolled_back"

        with pytest.raises(DeployRefused, match="promote refused"):
            promote(store, "travel", target)
        d, result = deploy_vertex(store, "travel", f"{MODEL}@3", predictions, settings, target)
        assert not result.passed and d.status == "rejected" and d.split == {one: 100}
        assert vertex.endpoints.split(d.endpoint) == {one: 100}

        vertex.endpoints.fail_next("deployModel", 500)
        with pytest.raises(DeployRefused, match="unchanged"):
            deploy_vertex(store, "travel", f"{MODEL}@2", predictions, settings, target)
        assert vertex.endpoints.split(d.endpoint) == {one: 100}
    events = [json.loads(x) for x in (store.folder("travel") / "events.jsonl").read_text().splitlines()]
    assert [e["code"] for e in events] == [
        "DEPLOYED",
        "DEPLOYED",
        "DEPLOYMENT_PROMOTED",
        "DEPLOYMENT_ROLLED_BACK",
        "DEPLOYMENT_ROLLED_BACK",
        "DEPLOYMENT_PROMOTE_BLOCKED",
        "DEPLOYMENT_SMOKE_FAILED",
        "DEPLOYMENT_FAILED",
    ]


def test_the_pipeline_deploy_step_deploys_what_register_recorded(
    vertex, registered, gcs_emulator, monkeypatch
):
    """The finetune pipeline's deploy step (components/deploy/component.py calls deploy_step) with its
    options built from a config exactly as the pipeline passes them: off, it refuses to act; on, it looks
    register's models:/NAME/VERSION up in the Vertex registry, deploys it as a canary whose own answers pass
    the smoke check, writes the record and keeps the deployment in Cloud Storage (the emulator), where
    `slmforge deploy status` and `promote` find it. A canary that answers nonsense is rolled back and the
    step fails, naming the check; the split is as it was."""
    import uuid

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from components.common.config_load import load_config
    from components.deploy.actions import DeployOptions, DeployRefused, deploy_step
    from pipelines.parameters import stage_options

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("SLMFORGE_VERTEX_ENDPOINT", vertex.endpoint)
    bucket = storage.Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket(
        f"slmforge-{uuid.uuid4().hex[:12]}"
    )
    overrides = (
        f"vertex.project={PROJECT}",
        f"vertex.region={REGION}",
        "registry.backend=vertex",
        "registry.model_name=travel",
        f"vertex.pipeline_root=gs://{bucket.name}/root",
        f"deploy.state=gs://{bucket.name}/deployments",
        "deploy.endpoint=travel-endpoint",
        "deploy.canary_percent=50",
        "deploy.gold_rows=6",
        "eval.max_new_tokens=32",
        "gates.rules=[{metric: schema_validity, min: 0.0}]",
    )
    config = load_config(DEMO, overrides)
    off = stage_options(DeployOptions, "deploy", config)
    predictions = registered["home"] / "predictions.parquet"
    record = registered["home"] / "deployment.json"
    with pytest.raises(DeployRefused, match="after_register is off"):
        deploy_step("models:/travel/1", predictions, off, record)
    opts = stage_options(
        DeployOptions, "deploy", load_config(DEMO, (*overrides, "deploy.after_register=true"))
    )

    with three_versions_served(vertex, registered["model"]):
        assert deploy_step("models:/travel/1", predictions, opts, record) == "canary"
        first = json.loads(record.read_text())
        assert first["model_uri"] == f"{MODEL}@1" and list(first["split"].values()) == [100]
        assert deploy_step("models:/travel/2", predictions, opts, record) == "canary"
        second = json.loads(record.read_text())
        assert sorted(second["split"].values()) == [50, 50] and second["smoke"]["passed"]
        with pytest.raises(DeployRefused, match=r"smoke check .* failed(.|\n)*FAIL"):
            deploy_step("models:/travel/3", predictions, opts, record)
        assert vertex.endpoints.split(second["endpoint"]) == second["split"]
    blobs = {b.name for b in bucket.list_blobs(prefix="deployments/travel-endpoint/")}
    assert {"deployment.json", "gold.jsonl", "events.jsonl"} <= {b.rsplit("/", 1)[1] for b in blobs}
    args = [a for o in overrides for a in ("--set", o)]
    code, out = _cli("deploy", "status", "-c", DEMO, *args, home=registered["home"])
    assert code == 0 and "rejected" in out and "DEPLOYMENT_SMOKE_FAILED" in out, out
