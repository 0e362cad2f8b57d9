"""The Vertex AI Model Registry backend (components/register/vertex_registry.py) through the real
google-cloud-aiplatform client, talking REST to the loopback stand-in of the Vertex API
(tests/loopback_vertex.py, which records every request as the client sent it), with the weights, tags and
audit log in a real ``gcp-storage-emulator`` bucket. Nothing is patched: the assertions read the recorded
requests and what the stand-in and the bucket hold."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path
from urllib.parse import unquote

import pytest
from loopback_vertex import LoopbackVertex

from components.register.backends import TAG_WEIGHTS, NewVersion, RegistryError
from components.register.registries import open_registry
from components.register.vertex_registry import (
    METRICS_SCHEMA_URI,
    VertexRegistry,
    labels_from_tags,
    vllm_args,
)

PROJECT, REGION = "test-project", "us-central1"
IMAGE = "us-docker.pkg.dev/vertex-ai/vertex-vision-model-garden-dockers/pytorch-vllm-serve:20240815_1634_RC00"
MODEL = f"projects/{PROJECT}/locations/{REGION}/models/travel"
W1, W2 = hashlib.sha256(b"weights 1").hexdigest(), hashlib.sha256(b"weights 2").hexdigest()
TAGS = {
    "config_hash": hashlib.sha256(b"config").hexdigest(),
    "data_sha256": hashlib.sha256(b"data").hexdigest(),
    "pipeline_run": "finetune-20261121-093000",
    "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
    "lineage.train": hashlib.sha256(b"train").hexdigest(),
    "gate_passed": "true",
    "gate_failed_rules": "[]",
    "gate": "PASS exact_match >= 0.9 (0.97)\nPASS json_valid >= 0.99 (1.0)",
}
METRICS = {"exact_match": 0.97, "json_valid": 1.0, "latency_p50_ms": 41.5}


@pytest.fixture()
def vertex(gcs_emulator, monkeypatch, tmp_path):
    """The loopback Vertex API with the SDK pointed at it, and a fresh bucket in the storage emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    bucket = client.create_bucket(f"slmforge-{uuid.uuid4().hex[:12]}")
    with LoopbackVertex() as api, api.sdk(PROJECT, REGION):
        api.bucket = bucket
        yield api


@pytest.fixture()
def registry(vertex) -> VertexRegistry:
    return VertexRegistry(PROJECT, REGION, f"gs://{vertex.bucket.name}/models", IMAGE)


def model_folder(path: Path, seed: bytes) -> Path:
    """A small exported model folder: config, weights bytes, a tokenizer in a subfolder."""
    (path / "tokenizer").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2", "seed": seed.hex()}))
    (path / "model.safetensors").write_bytes(hashlib.sha256(seed).digest() * 512)
    (path / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    return path


@pytest.fixture()
def folders(tmp_path) -> tuple[Path, Path]:
    return model_folder(tmp_path / "v1", b"1"), model_folder(tmp_path / "v2", b"2")


def register(registry, folder: Path, weights: str, **tags):
    description = "slmforge full model from Qwen/Qwen2.5-0.5B-Instruct"
    new = NewVersion("travel", weights, tags={**TAGS, **tags}, metrics=METRICS, description=description)
    return registry.register(folder, new)


def calls(api, method: str, suffix: str) -> list:
    """Recorded requests whose (decoded) path ends with ``suffix``."""
    return [r for r in api.requests if r.method == method and unquote(r.path).endswith(suffix)]


def test_upload_carries_the_serving_container_lineage_labels_and_aliases(vertex, registry, folders):
    version, created = register(registry, folders[0], W1)
    assert created and (version.version, version.uri) == ("1", f"{MODEL}@1")

    (upload,) = calls(vertex, "POST", "/models:upload")
    assert upload.path == f"/v1/projects/{PROJECT}/locations/{REGION}/models:upload"
    assert upload.body["modelId"] == "travel" and "parentModel" not in upload.body
    model = upload.body["model"]
    assert model["displayName"] == "travel"
    assert model["versionDescription"] == "slmforge full model from Qwen/Qwen2.5-0.5B-Instruct"
    spec = model["containerSpec"]
    assert spec["imageUri"] == IMAGE
    assert spec["args"] == vllm_args()
    assert spec["args"][:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--model=$(AIP_STORAGE_URI)" in spec["args"] and "--port=8080" in spec["args"]
    assert spec["ports"] == [{"containerPort": 8080}]
    assert (spec["predictRoute"], spec["healthRoute"]) == ("/v1/chat/completions", "/health")
    assert model["artifactUri"] == f"gs://{vertex.bucket.name}/models/travel/{W1[:16]}/model"

    labels = model["labels"]
    assert labels["weights_sha256"] == W1[:63]
    assert labels["config_hash"] == TAGS["config_hash"][:63]
    assert labels["data_sha256"] == TAGS["data_sha256"][:63]
    assert labels["pipeline_run"] == "finetune-20261121-093000"
    assert labels["lineage_train"] == TAGS["lineage.train"][:63]
    assert labels["base_model"] == "qwen-qwen2-5-0-5b-instruct"
    assert "gate_failed_rules" not in labels  # "[]" leaves nothing to filter on
    for key, value in labels.items():  # what Vertex accepts
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) and re.fullmatch(r"[a-z0-9_-]{0,63}", value)
    assert sorted(model["versionAliases"]) == ["default", f"sha256-{W1}"]

    # the weights went to the bucket first, where artifactUri points, with the exact tags beside them
    prefix = f"models/travel/{W1[:16]}/"
    assert sorted(b.name for b in vertex.bucket.list_blobs(prefix=prefix)) == [
        f"{prefix}model/config.json",
        f"{prefix}model/model.safetensors",
        f"{prefix}model/tokenizer/tokenizer.json",
        f"{prefix}slmforge_tags.json",
    ]


def test_a_second_version_names_its_parent_model(vertex, registry, folders):
    register(registry, folders[0], W1)
    v2, created = register(registry, folders[1], W2, pipeline_run="finetune-20261122-080000")
    assert created and v2.version == "2"
    second = calls(vertex, "POST", "/models:upload")[1].body
    assert second["parentModel"] == MODEL and "modelId" not in second
    assert second["model"]["versionAliases"] == [f"sha256-{W2}"]  # not the default: promotion moves it
    assert second["model"]["labels"]["pipeline_run"] == "finetune-20261122-080000"
    assert [v.version for v in registry.versions("travel")] == ["1", "2"]
    assert "default" in registry.get("travel", "1").aliases
    assert v2.source == f"gs://{vertex.bucket.name}/models/travel/{W2[:16]}/model"


def test_the_same_weights_twice_make_one_version(vertex, registry, folders):
    first, created = register(registry, folders[0], W1)
    again, created_again = register(registry, folders[0], W1, pipeline_run="a-retried-run")
    assert created and not created_again
    assert again == first
    assert len(calls(vertex, "POST", "/models:upload")) == 1
    assert len(calls(vertex, "POST", "/evaluations:import")) == 1
    (lookup,) = calls(vertex, "GET", "/models/travel:listVersions")
    assert lookup.query["filter"] == f'labels.weights_sha256="{W1[:63]}"'
    assert [v.version for v in registry.versions("travel")] == ["1"]
    assert registry.get("travel", "1").tags["pipeline_run"] == TAGS["pipeline_run"]  # not overwritten


def test_the_evaluation_is_imported_on_the_version(vertex, registry, folders):
    registry.register(
        folders[0], NewVersion("travel", W1, tags=TAGS, metrics={**METRICS, "perplexity": float("nan")})
    )
    (imported,) = calls(vertex, "POST", "/evaluations:import")
    assert unquote(imported.path) == f"/v1/{MODEL}@1/evaluations:import"
    evaluation = imported.body["modelEvaluation"]
    assert evaluation["metricsSchemaUri"] == METRICS_SCHEMA_URI
    assert evaluation["metrics"] == METRICS  # a NaN has no JSON form in a Struct: left out
    assert evaluation["metadata"] == {"pipeline_run": TAGS["pipeline_run"], "weights_sha256": W1}
    (stored,) = vertex.models.store[MODEL].evaluations
    assert stored["modelVersion"] == "1"


def test_an_alias_points_at_one_version(vertex, registry, folders):
    register(registry, folders[0], W1)
    register(registry, folders[1], W2)
    registry.set_alias("travel", "candidate", "1")
    assert registry.by_alias("travel", "candidate").version == "1"
    registry.set_alias("travel", "candidate", "2")
    assert registry.by_alias("travel", "candidate").version == "2"
    assert "candidate" not in registry.get("travel", "1").aliases
    merges = [(unquote(r.path), r.body) for r in calls(vertex, "POST", ":mergeVersionAliases")]
    assert merges == [
        (f"/v1/{MODEL}@1:mergeVersionAliases", {"versionAliases": ["candidate"]}),
        (f"/v1/{MODEL}@2:mergeVersionAliases", {"versionAliases": ["candidate"]}),
    ]
    # the champion is also Vertex's default: what a deploy without a version serves
    registry.set_alias("travel", "champion", "2")
    assert {"candidate", "champion", "default"} <= set(registry.get("travel", "2").aliases)
    assert registry.get("travel", "1").aliases == (f"sha256-{W1}",)
    assert registry.by_alias("travel", "nothing") is None
    with pytest.raises(RegistryError, match="travel has no version 9"):
        registry.set_alias("travel", "candidate", "9")
    with pytest.raises(RegistryError, match="Vertex aliases"):
        registry.set_alias("travel", "Best!", "1")


def test_get_round_trips_the_full_tags_and_set_tags_updates_the_labels(vertex, registry, folders):
    register(registry, folders[0], W1)
    assert registry.get("travel", "1").tags == {**TAGS, TAG_WEIGHTS: W1}  # 64-char hashes, JSON, lines
    registry.set_tags("travel", "1", {"gate_passed": "false", "promoted_by": "Ana <ana@example.com>"})
    tags = registry.get("travel", "1").tags
    assert tags == {**TAGS, TAG_WEIGHTS: W1, "gate_passed": "false", "promoted_by": "Ana <ana@example.com>"}
    (patch,) = calls(vertex, "PATCH", f"{MODEL}@1")  # a version update names the version
    assert patch.query["updateMask"] == "labels"
    assert patch.body["labels"]["gate_passed"] == "false"
    assert patch.body["labels"]["promoted_by"] == "ana--ana-example-com-"
    assert patch.body["labels"]["weights_sha256"] == W1[:63]  # labels are replaced whole: all kept
    assert vertex.models.store[MODEL].versions["1"]["labels"] == patch.body["labels"]
    with pytest.raises(RegistryError, match="no version 3"):
        registry.set_tags("travel", "3", {"a": "b"})


def test_download_fetches_the_version_files(registry, folders, tmp_path):
    register(registry, folders[0], W1)
    register(registry, folders[1], W2)
    out = registry.download("travel", "2", tmp_path / "download")
    assert out == tmp_path / "download" / "model"
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(folders[1]) for p in folders[1].rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (folders[1] / name).read_bytes()
    with pytest.raises(RegistryError, match="no version 5"):
        registry.download("travel", "5", tmp_path / "nothing")


def test_audit_records_are_kept_in_order(vertex, registry, folders):
    with pytest.raises(RegistryError, match="travel is not registered"):
        registry.add_audit("travel", {"action": "promote"})
    assert registry.audit("travel") == []
    register(registry, folders[0], W1)
    first = {"action": "promote", "version": "1", "by": "ana"}
    second = {"action": "rollback", "version": "1", "reason": "latency"}
    registry.add_audit("travel", first)
    registry.add_audit("travel", second)
    assert registry.audit("travel") == [first, second]
    blob = vertex.bucket.blob("models/travel/audit.jsonl")
    assert [json.loads(line) for line in blob.download_as_text().splitlines()] == [first, second]


def test_a_missing_model_has_no_versions(registry):
    assert registry.versions("ghost") == []
    assert registry.get("ghost", "1") is None
    assert registry.by_alias("ghost", "champion") is None


def test_permission_denied_names_the_project_and_the_fix(vertex, registry, folders):
    vertex.models.denied.add(PROJECT)
    with pytest.raises(RegistryError, match=r"register travel: permission denied in project 'test-project'"):
        register(registry, folders[0], W1)
    with pytest.raises(RegistryError, match=r"roles/aiplatform\.user"):
        registry.versions("travel")
    assert not calls(vertex, "POST", "/models:upload")


def test_settings_and_names_are_checked():
    with pytest.raises(RegistryError, match=r"vertex\.project"):
        VertexRegistry("", REGION, "gs://b/models", IMAGE)
    with pytest.raises(RegistryError, match=r"registry\.staging_uri"):
        VertexRegistry(PROJECT, REGION, "b/models", IMAGE)
    registry = open_registry(
        "vertex", project=PROJECT, region=REGION, staging_bucket="gs://b/models", serving_image=IMAGE
    )
    assert isinstance(registry, VertexRegistry) and registry.backend == "vertex"
    from components.common.config import VLLM_SERVING_IMAGE

    assert VertexRegistry(PROJECT, REGION, "gs://b/models").serving_image == VLLM_SERVING_IMAGE
    with pytest.raises(RegistryError, match="cannot be a Vertex model ID"):
        registry.resource("Travel Model")


def test_labels_keep_lineage_first_within_the_limit():
    tags = {f"lineage.step{i:02d}": "x" * 70 for i in range(70)}
    tags.update({TAG_WEIGHTS: W1, "pipeline_run": "Run 7", "config_hash": "c" * 64})
    labels = labels_from_tags(tags)
    assert len(labels) == 64
    assert list(labels)[:3] == ["weights_sha256", "pipeline_run", "config_hash"]
    assert labels["pipeline_run"] == "run-7" and labels["lineage_step00"] == "x" * 63


def test_registration_promotion_and_rollback_work_on_vertex(vertex, registry, tmp_path):
    """The backend-independent commands (components/register/core.py, promotion.py) on this backend."""
    from components.register.core import register as register_candidate
    from components.register.promotion import PromotionRefused, promote, rollback

    def version(seed: str, green: bool, run: str) -> str:
        result = register_candidate(
            registry,
            model_folder(tmp_path / seed, seed.encode()),
            model_name="travel",
            weights_sha256=hashlib.sha256(seed.encode()).hexdigest(),
            metrics=METRICS,
            tags={**TAGS, "pipeline_run": run},
            gate_passed=green,
            gate_failed_rules=[] if green else ["FAIL exact_match >= 0.9: candidate 0.41"],
        )
        return result.version

    assert (version("g1", True, "run-1"), version("r2", False, "run-2"), version("g3", True, "run-3")) == (
        "1",
        "2",
        "3",
    )
    assert registry.by_alias("travel", "candidate").version == "3"  # a red version never gets candidate
    promote(registry, "travel", version="1", who="ci-bot")
    with pytest.raises(PromotionRefused, match=r"candidate 0\.41"):
        promote(registry, "travel", run="run-2", who="ci-bot")
    assert promote(registry, "travel", run="run-3", who="ci-bot").from_version == "1"
    assert not promote(registry, "travel", version="3", who="ci-bot").changed
    rollback(registry, "travel", to="1", who="on-call")
    champion = registry.by_alias("travel", "champion")
    assert champion.version == "1" and "default" in champion.aliases  # an unversioned deploy serves it
    assert champion.tags["champion.rollback_by"] == "on-call"
    assert [(r["action"], r["from"], r["to"]) for r in registry.audit("travel")] == [
        ("promote", None, "1"),
        ("promote", "1", "3"),
        ("rollback", "3", "1"),
    ]
