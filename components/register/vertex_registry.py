"""The Vertex AI Model Registry (components/register/backends.py ``Registry``), through google-cloud-aiplatform.

One registered model per slmforge model name, with that name as its model ID
(``projects/<p>/locations/<r>/models/<name>``), so every call addresses it directly and no display-name
search is needed. Each registration is a version of it, uploaded with ``aiplatform.Model.upload``.

Where things live (``<staging>`` = the ``staging_bucket`` gs:// prefix):

- weights: ``<staging>/<name>/<weights_sha256[:16]>/model/`` (the version's ``artifact_uri``).
- tags: Vertex labels hold only lowercase ``[a-z0-9_-]`` values of at most 63 characters (at most 64
  labels), so a 64-character hash, a JSON list or a sentence does not fit. The exact tags are kept in
  ``<staging>/<name>/<weights_sha256[:16]>/slmforge_tags.json``, found from the version's
  ``artifact_uri`` (which the API returns), and read back by ``get``. The labels are an index of the
  same tags, sanitized and cut to 63 characters, for filters and the console; registration finds an
  existing version of the same weights by the ``weights_sha256`` label.
- aliases: every version carries ``sha256-<weights_sha256>`` (its weights, exactly); ``candidate`` and
  ``champion`` are moved by ``set_alias``. Vertex keeps an alias on one version of a model at a time:
  adding it to a version removes it from the one that had it. The first version gets Vertex's
  ``default`` alias (a deploy without a version serves ``default``); later ``default`` moves with
  ``champion``, so the champion is what an unversioned deploy serves.
- evaluation: the candidate's metrics are imported as a ModelEvaluation of the version.
- audit: ``<staging>/<name>/audit.jsonl``, one JSON record a line, appended with a generation
  precondition so two writers cannot drop each other's record.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from components.register.backends import (
    CHAMPION,
    TAG_RUN,
    TAG_WEIGHTS,
    ModelVersion,
    NewVersion,
    RegistryError,
)

DEFAULT_ALIAS = "default"  # Vertex's alias of the version an unversioned deploy or get uses
TAGS_OBJECT = "slmforge_tags.json"
AUDIT_OBJECT = "audit.jsonl"
MAX_LABELS = 64
LABEL_CHARS = 63
# Lineage labels first, so they survive the 64-label limit.
FIRST_LABELS = (TAG_WEIGHTS, TAG_RUN, "config_hash", "data_sha256", "gate_passed", "base_model")

# The schema Vertex's own evaluation importer uses for text-generation metrics: kubeflow/pipelines
# components/google-cloud/google_cloud_pipeline_components/container/_implementation/model_evaluation/
# import_model_evaluation.py, PROBLEM_TYPE_TO_SCHEMA_URI['text-generation'].
METRICS_SCHEMA_URI = (
    "gs://google-cloud-aiplatform/schema/modelevaluation/general_text_generation_metrics_1.0.0.yaml"
)

# Serving container: the Vertex Model Garden vLLM image (components/common/config.py VLLM_SERVING_IMAGE),
# started as vLLM's OpenAI-compatible server, `python -m vllm.entrypoints.openai.api_server --host=0.0.0.0
# --port=8080 --model=<gs:// folder> ...`, with predict route /v1/chat/completions: `:rawPredict` on the
# endpoint forwards a chat-completions body there, which is what `slmforge deploy`'s smoke and drift checks
# send (the same request `slmforge serve` answers; structured outputs as vLLM takes them). Health route
# /health, 16 GB shared memory, 2 h deployment timeout (as Google's Model Garden notebooks deploy vLLM:
# GoogleCloudPlatform/vertex-ai-samples, notebooks/community/model_garden, deploy_model_vllm).
# --model=$(AIP_STORAGE_URI): Vertex copies the version's artifact_uri to a bucket it owns and expands
# $(VAR) in container args from its AIP_* variables (ModelContainerSpec.args); the container loads gs://.
SERVING_PORT = 8080
PREDICT_ROUTE = "/v1/chat/completions"
HEALTH_ROUTE = "/health"
SHARED_MEMORY_MB = 16 * 1024
DEPLOYMENT_TIMEOUT_S = 7200


def vllm_args(tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9) -> list[str]:
    """The serving container's command line (the Model Garden vLLM server on the version's weights)."""
    return [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host=0.0.0.0",
        f"--port={SERVING_PORT}",
        "--model=$(AIP_STORAGE_URI)",
        f"--tensor-parallel-size={tensor_parallel_size}",
        "--swap-space=16",
        f"--gpu-memory-utilization={gpu_memory_utilization}",
        "--disable-log-stats",
    ]


def label_key(key: str) -> str:
    """A tag name as a Vertex label key: lowercase ``[a-z0-9_-]``, starting with a letter, <= 63 chars."""
    key = re.sub(r"[^a-z0-9_-]", "_", key.lower())
    if not key[:1].isalpha():
        key = "t_" + key
    return key[:LABEL_CHARS]


def label_value(value: str) -> str:
    """A tag value as a Vertex label value: lowercase ``[a-z0-9_-]``, <= 63 chars (an index, not the value)."""
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:LABEL_CHARS]


def labels_from_tags(tags: dict[str, str]) -> dict[str, str]:
    """Vertex labels for a version's tags: lineage first, the rest by name, at most 64; the first tag wins
    when two names sanitize to the same key; a value with no letter or digit left gets no label."""
    order = [k for k in FIRST_LABELS if k in tags] + sorted(k for k in tags if k not in FIRST_LABELS)
    labels: dict[str, str] = {}
    for key in order:
        value = label_value(tags[key])
        if len(labels) == MAX_LABELS:
            break
        if re.search(r"[a-z0-9]", value):  # "[]" would be "--": nothing to filter on
            labels.setdefault(label_key(key), value)
    return labels


def weights_alias(weights_sha256: str) -> str:
    """The alias that names a version by its weights (Vertex aliases: [a-z][a-zA-Z0-9-]{0,126}[a-z0-9])."""
    return f"sha256-{weights_sha256.lower()}"


_MODEL_ID = re.compile(r"[a-z_][a-z0-9_-]{0,62}")
_ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name.strip("/")


class VertexRegistry:
    backend = "vertex"

    def __init__(
        self,
        project: str,
        region: str,
        staging_bucket: str,
        serving_image: str = "",
        serving_args: list[str] | None = None,
    ):
        """``staging_bucket``: the gs:// prefix weights, tags and the audit log are written under;
        ``serving_image``: the serving container of uploaded versions (default: the Model Garden vLLM
        image); ``serving_args``: its command line (default ``vllm_args()``)."""
        if not project:
            raise RegistryError("the Vertex registry needs a project: set vertex.project in the config")
        if not region:
            raise RegistryError("the Vertex registry needs a region: set vertex.region in the config")
        if not staging_bucket.startswith("gs://") or not _split(staging_bucket)[0]:
            raise RegistryError(
                f"registry staging location {staging_bucket!r} is not a gs:// prefix: set "
                "registry.staging_uri (or vertex.pipeline_root) to gs://<bucket>/<folder>"
            )
        if not serving_image:
            from components.common.config import VLLM_SERVING_IMAGE

            serving_image = VLLM_SERVING_IMAGE
        self.project, self.region = project, region
        self.staging_bucket = staging_bucket.rstrip("/")
        self.serving_image = serving_image
        self.serving_args = list(serving_args) if serving_args is not None else vllm_args()
        self._storage = None

    # -- names and clients -----------------------------------------------------------------------------
    def resource(self, name: str) -> str:
        """The model resource of ``name`` (its model ID is the name)."""
        if not _MODEL_ID.fullmatch(name):
            raise RegistryError(
                f"model name {name!r} cannot be a Vertex model ID: use at most 63 of lowercase letters, "
                "digits, '_' and '-', starting with a letter (registry.model_name or the config name)"
            )
        return f"projects/{self.project}/locations/{self.region}/models/{name}"

    def _registry(self, name: str):
        from google.cloud import aiplatform

        return aiplatform.models.ModelRegistry(
            self.resource(name), project=self.project, location=self.region
        )

    def _bucket(self):
        from google.cloud import storage

        if self._storage is None:
            self._storage = storage.Client(project=self.project)
        return self._storage.bucket(_split(self.staging_bucket)[0])

    def _object(self, uri: str):
        bucket, name = _split(uri)
        return self._bucket().client.bucket(bucket).blob(name)

    def _model_prefix(self, name: str) -> str:
        return f"{self.staging_bucket}/{name}"

    @contextmanager
    def _explained(self, what: str):
        """SDK and storage errors with a clear cause as RegistryError naming what failed and the fix."""
        from google.api_core import exceptions
        from google.auth.exceptions import DefaultCredentialsError

        try:
            yield
        except DefaultCredentialsError as e:
            raise RegistryError(
                f"{what}: no Google credentials ({e}); run `gcloud auth application-default login` or "
                "set GOOGLE_APPLICATION_CREDENTIALS"
            ) from e
        except exceptions.Unauthorized as e:
            raise RegistryError(
                f"{what}: not authenticated ({e.message}); run `gcloud auth application-default login`"
            ) from e
        except exceptions.Forbidden as e:  # PermissionDenied is a Forbidden
            raise RegistryError(
                f"{what}: permission denied in project {self.project!r} ({e.message}). Check that the "
                f"project exists and has the Vertex AI API enabled (`gcloud services enable "
                f"aiplatform.googleapis.com --project {self.project}`), and grant the caller "
                f"roles/aiplatform.user on it and roles/storage.objectAdmin on {self.staging_bucket}"
            ) from e
        except exceptions.NotFound as e:
            raise RegistryError(
                f"{what}: not found ({e.message}). Check vertex.project ({self.project!r}), "
                f"vertex.region ({self.region!r}) and that the bucket of {self.staging_bucket} exists "
                f"(`gcloud storage buckets create gs://{_split(self.staging_bucket)[0]} "
                f"--location={self.region}`)"
            ) from e

    # -- storage ---------------------------------------------------------------------------------------
    def _read_json(self, uri: str):
        from google.api_core.exceptions import NotFound

        try:
            return json.loads(self._object(uri).download_as_bytes())
        except NotFound:
            return None

    def _write_json(self, uri: str, value) -> None:
        self._object(uri).upload_from_string(
            json.dumps(value, indent=2, sort_keys=True), content_type="application/json"
        )

    def _upload_folder(self, model_dir: Path, uri: str) -> None:
        files = sorted(p for p in model_dir.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"{model_dir} holds no files to register")
        for path in files:
            self._object(f"{uri}/{path.relative_to(model_dir).as_posix()}").upload_from_filename(str(path))

    @staticmethod
    def _tags_uri(artifact_uri: str) -> str:
        return f"{artifact_uri.rstrip('/').rsplit('/', 1)[0]}/{TAGS_OBJECT}"

    # -- reading ---------------------------------------------------------------------------------------
    def _version(self, name: str, model) -> ModelVersion:
        """A ModelVersion from a Model proto of one version."""
        source = model.artifact_uri
        tags = self._read_json(self._tags_uri(source)) if source.startswith("gs://") else None
        return ModelVersion(
            name=name,
            version=str(model.version_id),
            uri=f"{self.resource(name)}@{model.version_id}",
            source=source,
            tags=tags if tags is not None else dict(model.labels),  # a version slmforge did not write
            aliases=tuple(sorted(model.version_aliases)),
        )

    def _get_proto(self, name: str, version_or_alias: str):
        from google.api_core.exceptions import NotFound
        from google.cloud import aiplatform

        try:
            return aiplatform.Model(
                self.resource(name), project=self.project, location=self.region, version=version_or_alias
            ).gca_resource
        except NotFound:
            return None

    def get(self, name: str, version: str) -> ModelVersion | None:
        if not str(version).isdigit():  # a version ID; aliases go through by_alias
            return None
        with self._explained(f"get {name} version {version}"):
            model = self._get_proto(name, str(version))
            return None if model is None else self._version(name, model)

    def by_alias(self, name: str, alias: str) -> ModelVersion | None:
        if not _ALIAS.fullmatch(alias):
            return None
        with self._explained(f"get {name}@{alias}"):
            model = self._get_proto(name, alias)
            return None if model is None else self._version(name, model)

    def _version_protos(self, name: str, filter: str = "") -> list:
        from google.api_core.exceptions import NotFound

        try:
            pages = self._registry(name).client.list_model_versions(
                request={"name": self.resource(name), "filter": filter}
            )
            return sorted(pages, key=lambda m: int(m.version_id))
        except NotFound:
            return []

    def versions(self, name: str) -> list[ModelVersion]:
        with self._explained(f"list the versions of {name}"):
            return [self._version(name, m) for m in self._version_protos(name)]

    def _exists(self, name: str) -> bool:
        return self._get_proto(name, "") is not None

    # -- writing ---------------------------------------------------------------------------------------
    def register(self, model_dir: str | Path, new: NewVersion) -> tuple[ModelVersion, bool]:
        name, weights_sha256, tags, metrics = new.name, new.weights_sha256, new.tags, new.metrics
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise RegistryError(f"{model_dir} is not a folder: register the exported model folder")
        resource = self.resource(name)
        all_tags = {**{k: str(v) for k, v in tags.items()}, TAG_WEIGHTS: weights_sha256}
        with self._explained(f"register {name}"):
            exists = self._exists(name)
            if exists:
                found = self._find_weights(name, weights_sha256)
                if found is not None:
                    return found, False
            folder = f"{self._model_prefix(name)}/{weights_sha256[:16]}"
            artifact_uri = f"{folder}/model"
            self._upload_folder(model_dir, artifact_uri)
            self._write_json(f"{folder}/{TAGS_OBJECT}", all_tags)
            model = self._upload(name, resource if exists else None, artifact_uri, all_tags, new.description)
            self._import_evaluation(name, model.version_id, metrics, all_tags)
            return self._version(name, model.gca_resource), True

    def _find_weights(self, name: str, weights_sha256: str) -> ModelVersion | None:
        """The first version of ``name`` holding these weights: found by label, confirmed by the alias
        that carries the whole hash (or by its tags)."""
        key, value = label_key(TAG_WEIGHTS), label_value(weights_sha256)
        for model in self._version_protos(name, f'labels.{key}="{value}"'):
            version = self._version(name, model)
            if weights_alias(weights_sha256) in version.aliases or version.tags.get(TAG_WEIGHTS) == (
                weights_sha256
            ):
                return version
        return None

    def _upload(self, name: str, parent: str | None, artifact_uri: str, tags: dict, description: str):
        from google.api_core.exceptions import AlreadyExists
        from google.cloud import aiplatform

        def upload(parent_model: str | None):
            return aiplatform.Model.upload(
                display_name=name,
                artifact_uri=artifact_uri,
                model_id=None if parent_model else name,
                parent_model=parent_model,
                # the first version is Vertex's default; later ones only when promoted (set_alias)
                is_default_version=parent_model is None,
                version_aliases=[weights_alias(tags[TAG_WEIGHTS])],
                version_description=description or None,
                labels=labels_from_tags(tags),
                serving_container_image_uri=self.serving_image,
                serving_container_args=self.serving_args,
                serving_container_ports=[SERVING_PORT],
                serving_container_predict_route=PREDICT_ROUTE,
                serving_container_health_route=HEALTH_ROUTE,
                serving_container_shared_memory_size_mb=SHARED_MEMORY_MB,
                serving_container_deployment_timeout=DEPLOYMENT_TIMEOUT_S,
                project=self.project,
                location=self.region,
            )

        try:
            return upload(parent)
        except AlreadyExists:  # another registration created the model first: add a version to it
            if parent is not None:
                raise
            return upload(self.resource(name))

    def _import_evaluation(self, name: str, version: str, metrics: dict, tags: dict) -> None:
        """Attach the candidate's metrics to the version as a Vertex ModelEvaluation (non-finite values
        are left out: a protobuf Struct holds no NaN in JSON)."""
        from google.cloud.aiplatform.compat.types import model_evaluation
        from google.protobuf import json_format, struct_pb2

        values = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if not values:
            return
        metadata = {"pipeline_run": tags.get(TAG_RUN, ""), TAG_WEIGHTS: tags[TAG_WEIGHTS]}
        evaluation = model_evaluation.ModelEvaluation(
            display_name=f"slmforge {tags.get(TAG_RUN) or name}",
            metrics_schema_uri=METRICS_SCHEMA_URI,
            metrics=json_format.ParseDict(values, struct_pb2.Value()),
            metadata=json_format.ParseDict(metadata, struct_pb2.Value()),
        )
        self._registry(name).client.import_model_evaluation(
            parent=f"{self.resource(name)}@{version}", model_evaluation=evaluation
        )

    def _require(self, name: str, version: str) -> ModelVersion:
        found = self.get(name, version)
        if found is None:
            raise RegistryError(
                f"{name} has no version {version} in {self.project}/{self.region}: list them with "
                f"`slmforge lineage` or `gcloud ai models list-version {name} --region={self.region}`"
            )
        return found

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if not _ALIAS.fullmatch(alias) or alias == DEFAULT_ALIAS:
            raise RegistryError(
                f"alias {alias!r}: Vertex aliases are a lowercase letter, then letters, digits or '-', "
                f"ending in a lowercase letter or digit; {DEFAULT_ALIAS!r} is Vertex's own"
            )
        self._require(name, version)
        # Vertex moves an alias: adding it here removes it from the version that had it.
        aliases = [alias, DEFAULT_ALIAS] if alias == CHAMPION else [alias]
        with self._explained(f"set alias {alias} of {name} to version {version}"):
            self._registry(name).add_version_aliases(aliases, str(version))

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        from google.cloud.aiplatform.compat.types import model as gca_model

        current = self._require(name, version)
        merged = {**current.tags, **{k: str(v) for k, v in tags.items()}}
        with self._explained(f"set tags of {name} version {version}"):
            if current.source.startswith("gs://"):
                self._write_json(self._tags_uri(current.source), merged)
            # a version update needs the @version name (UpdateModelRequest); labels are replaced whole
            self._registry(name).client.update_model(
                model=gca_model.Model(
                    name=f"{self.resource(name)}@{version}", labels=labels_from_tags(merged)
                ),
                update_mask={"paths": ["labels"]},
            )

    def add_audit(self, name: str, record: dict[str, Any]) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        line = json.dumps(record, sort_keys=True) + "\n"
        with self._explained(f"add an audit record to {name}"):
            if not self._exists(name):
                raise RegistryError(f"{name} is not registered in {self.project}/{self.region}")
            blob = self._object(f"{self._model_prefix(name)}/{AUDIT_OBJECT}")
            for _ in range(10):  # read, append, write if nobody wrote in between
                try:
                    blob.reload()
                    text, generation = blob.download_as_text(), blob.generation
                except NotFound:
                    text, generation = "", 0
                try:
                    blob.upload_from_string(
                        text + line, content_type="application/x-ndjson", if_generation_match=generation
                    )
                    return
                except PreconditionFailed:
                    continue
            raise RegistryError(f"{blob.name}: changed by others 10 times in a row; try again")

    def audit(self, name: str) -> list[dict[str, Any]]:
        from google.api_core.exceptions import NotFound

        with self._explained(f"read the audit records of {name}"):
            try:
                text = self._object(f"{self._model_prefix(name)}/{AUDIT_OBJECT}").download_as_text()
            except NotFound:
                return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def download(self, name: str, version: str, dst: str | Path) -> Path:
        from components.common.gcs import download_prefix

        found = self._require(name, version)
        target = Path(dst) / PurePosixPath(_split(found.source)[1]).name
        with self._explained(f"download {name} version {version} from {found.source}"):
            try:
                return download_prefix(found.source, target, client=self._bucket().client)
            except FileNotFoundError as e:
                raise RegistryError(f"{name} version {version}: {e}") from e
