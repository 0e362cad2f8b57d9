"""fetch: copy the model an evaluate-only run scores into a folder (the step's Model artifact).

The model is named by a URI string, not an optional artifact input (kfp.local rejects those,
kubeflow/pipelines#13061):

* ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``: a version of the registry the pipeline's ``registry``
  parameter names (MLflow or Vertex AI Model Registry, components/register/backends.py);
* ``gs://bucket/folder``: every object under the prefix (components/common/gcs.py);
* a local folder: copied as it is (local runs).

The folder must hold a model: a checkpoint (``config.json``), an adapter (``adapter_config.json``) or a
trained Model artifact (``slmforge_model.json``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

MODEL_MARKERS = ("config.json", "adapter_config.json", "slmforge_model.json")


def _copy_folder(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, dirs_exist_ok=True)


def fetch_model(uri: str, registry_spec: str | dict, dst: str | Path) -> dict[str, Any]:
    """Copy the model ``uri`` names into the folder ``dst``. Returns what it resolved to, for the artifact's
    metadata: ``{"model_uri": uri, "resolved": ...}`` plus, for a registry version, its ``version`` and
    the ``registry`` backend. Raises ValueError for a URI of no supported form or a folder with no model,
    FileNotFoundError when nothing is there."""
    dst = Path(dst)
    found: dict[str, Any] = {"model_uri": uri}
    if uri.startswith("models:/"):
        from components.register.core import registry_from_spec, version_of

        registry = registry_from_spec(registry_spec)
        hit = version_of(uri, registry)
        with tempfile.TemporaryDirectory() as tmp:
            _copy_folder(registry.download(hit.name, hit.version, tmp), dst)
        found.update(resolved=hit.uri, version=hit.version, registry=registry.backend)
    elif uri.startswith("gs://"):
        from components.common.gcs import download_prefix

        download_prefix(uri, dst)
        found["resolved"] = uri
    elif "://" not in uri and Path(uri).is_dir():
        _copy_folder(Path(uri), dst)
        found["resolved"] = str(Path(uri).resolve())
    else:
        raise ValueError(
            f"model {uri!r}: give models:/NAME/VERSION, models:/NAME@ALIAS, a gs:// folder or a local folder "
            "(a base model locator such as a hub id is scored by the base-model baseline)"
        )
    if not any((dst / marker).is_file() for marker in MODEL_MARKERS):
        raise ValueError(f"{uri}: the folder holds no model (none of {', '.join(MODEL_MARKERS)})")
    return found
