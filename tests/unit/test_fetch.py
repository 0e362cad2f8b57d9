"""fetch_model_op: the model an evaluate-only run scores, called as the component body (``python_func``) with
a real Model artifact. The gs:// branch is components/common/gcs.py's download_prefix, tested against the
storage emulator in test_sources.py; here: registry versions (embedded MLflow), local folders, refusals."""

from __future__ import annotations

import json

import pytest
from kfp import dsl

from components import fetch_model_op
from components.common.provenance import sha256_path

MLFLOW = json.dumps({"backend": "mlflow", "tracking_uri": ""})


def _fetch(tmp_path, uri: str) -> dsl.Model:
    model = dsl.Model(name="model", uri=str(tmp_path / "out" / "model"))
    fetch_model_op.python_func(model_uri=uri, registry=MLFLOW, config_hash="c" * 64, model=model)
    return model


def test_local_folder(tmp_path, tiny_model):
    model = _fetch(tmp_path, str(tiny_model))
    assert sha256_path(model.path) == sha256_path(tiny_model) == model.metadata["sha256"]
    assert model.metadata["model_uri"] == str(tiny_model) and model.metadata["config_hash"] == "c" * 64


def test_registry_version_and_alias(tmp_path, monkeypatch, tiny_model):
    from components.register.backends import NewVersion
    from components.register.core import registry_from_spec

    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))
    registry = registry_from_spec(MLFLOW)
    version, _ = registry.register(tiny_model, NewVersion("m", sha256_path(tiny_model)))
    registry.set_alias("m", "champion", version.version)
    for uri in (f"models:/m/{version.version}", "models:/m@champion"):
        model = _fetch(tmp_path / uri.replace("/", "_").replace(":", ""), uri)
        assert model.metadata["resolved"] == f"models:/m/{version.version}"
        assert model.metadata["version"] == version.version and model.metadata["registry"] == "mlflow"
        assert model.metadata["sha256"] == sha256_path(tiny_model)
    with pytest.raises(FileNotFoundError, match="no such version in the mlflow registry"):
        _fetch(tmp_path / "missing", "models:/m@candidate")


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="give models:/NAME/VERSION"):
        _fetch(tmp_path, "Qwen/Qwen2.5-0.5B-Instruct")  # a hub id: the base-model baseline scores those
    with pytest.raises(ValueError, match="use models:/NAME/VERSION or models:/NAME@ALIAS"):
        _fetch(tmp_path, "models:/only-a-name")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("no weights here")
    with pytest.raises(ValueError, match="holds no model"):
        _fetch(tmp_path, str(empty))
