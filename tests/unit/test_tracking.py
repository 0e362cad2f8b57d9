"""Training tracking on the tiny model: real SFTTrainer runs logged to MLflow (a sqlite file, and a real
`mlflow server` on loopback); Vertex AI Experiments stays off unless configured."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest

from components.train.core import TrainOptions, build_trainer
from components.train.tracking import (
    LOSS_CURVE,
    MlflowSink,
    TrackingCallback,
    TrackingError,
    VertexSink,
    flatten_params,
    loss_curve_png,
    tracking_sinks,
)

SYSTEM = "You turn a travel request into a JSON list of commands."
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 6


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "AIP_EXPERIMENT_NAME", "AIP_EXPERIMENT_RUN_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory) -> Path:
    """One sqlite store for the module: creating its tables takes 1.3-1.7 s."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


def _opts() -> TrainOptions:
    return TrainOptions(method="full", max_steps=STEPS, batch_size=4, logging_steps=1)


def _record_batches(trainer) -> list[tuple[int, int]]:
    """(all tokens, non-pad tokens) of every batch the collator makes, to check the counter against."""
    seen: list[tuple[int, int]] = []
    collate = trainer.data_collator

    def recording(examples):
        batch = collate(examples)
        seen.append((batch["input_ids"].numel(), int(batch["attention_mask"].sum())))
        return batch

    trainer.data_collator = recording
    return seen


def _train_tracked(canonical_table, tmp_path, sinks):
    opts = _opts()
    trainer, _ = build_trainer(canonical_table, "tiny://travel", SYSTEM, opts, str(tmp_path / "scratch"))
    batches = _record_batches(trainer)
    tracker = TrackingCallback(sinks, params={"base_model": "tiny://travel", **asdict(opts)})
    trainer.add_callback(tracker)
    trainer.train()
    return trainer, tracker, batches


def _check_run(uri: str, tracker: TrackingCallback, batches, tmp_path: Path, trainer) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    s = tracker.summary
    run = client.get_run(s.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["max_steps"] == str(STEPS) and params["base_model"] == "tiny://travel"
    assert params["lora_target_modules"] == "all-linear" and params["method"] == "full"

    def history(key):
        return sorted((m.step, m.value) for m in client.get_metric_history(s.run_id, key))

    loss = history("loss")
    assert [step for step, _ in loss] == list(range(1, STEPS + 1))
    assert loss == s.loss_history
    assert len(history("learning_rate")) == STEPS and len(history("grad_norm")) == STEPS
    assert all(v > 0 for _, v in history("tokens_per_s")) and len(history("tokens_per_s")) == STEPS
    efficiency = history("padding_efficiency")
    assert len(efficiency) == STEPS and all(0 < v <= 1 for _, v in efficiency)
    assert all(0 < v <= 1 for _, v in history("padding_efficiency_window"))

    # Exactly the batches trained on: the dataloader collates one batch ahead, the counter must not.
    assert len(batches) >= STEPS
    assert s.tokens == sum(t for t, _ in batches[:STEPS])
    assert s.non_pad_tokens == sum(n for _, n in batches[:STEPS])
    assert s.non_pad_tokens == history("num_tokens")[-1][1]  # TRL's own count of non-pad tokens agrees
    assert s.padding_efficiency == pytest.approx(s.non_pad_tokens / s.tokens) and s.padding_efficiency < 1
    assert efficiency[-1][1] == pytest.approx(s.padding_efficiency)
    assert s.tokens_per_s > 0

    assert Path(s.png_path) == tmp_path / "scratch" / LOSS_CURVE
    assert LOSS_CURVE in [a.path for a in client.list_artifacts(s.run_id)]
    local = client.download_artifacts(s.run_id, LOSS_CURVE, str(tmp_path / "download"))
    _assert_png(Path(local))
    assert not trainer.model._forward_pre_hooks  # the counting hook is removed at train end


def _assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)


def test_run_tracked_in_sqlite(canonical_table, tmp_path, sqlite_db):
    uri = f"sqlite:///{sqlite_db}"
    sinks = tracking_sinks("tracking-test", uri)
    assert [type(s) for s in sinks] == [MlflowSink]  # no Vertex unless configured
    trainer, tracker, batches = _train_tracked(canonical_table, tmp_path, sinks)
    _check_run(uri, tracker, batches, tmp_path, trainer)
    assert list((sqlite_db.parent / "mlartifacts").rglob(LOSS_CURVE))  # beside the db, not in ./mlruns


def test_failed_training_ends_the_run_failed(canonical_table, tmp_path, sqlite_db):
    from mlflow import MlflowClient
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                raise RuntimeError("boom")

    uri = f"sqlite:///{sqlite_db}"
    trainer, _ = build_trainer(canonical_table, "tiny://travel", SYSTEM, _opts(), str(tmp_path))
    tracker = TrackingCallback(tracking_sinks("tracking-test", uri), params=_opts())
    trainer.add_callback(tracker)
    trainer.add_callback(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    summary = tracker.end("FAILED")
    assert MlflowClient(tracking_uri=uri).get_run(summary.run_id).info.status == "FAILED"
    assert summary.tokens > 0 and len(summary.loss_history) == 1 and not trainer.model._forward_pre_hooks
    tracker.end("FAILED")  # idempotent


def test_run_stopped_before_max_steps_ends_killed(canonical_table, tmp_path, sqlite_db):
    """As when SIGTERM stops a checkpointing run: trainer.train() returns early and train() raises."""
    from mlflow import MlflowClient
    from transformers import TrainerCallback

    class StopAtTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            control.should_training_stop = state.global_step >= 2

    uri = f"sqlite:///{sqlite_db}"
    trainer, _ = build_trainer(canonical_table, "tiny://travel", SYSTEM, _opts(), str(tmp_path))
    tracker = TrackingCallback(tracking_sinks("tracking-test", uri), artifact_dir=tmp_path / "curve")
    trainer.add_callback(tracker)
    trainer.add_callback(StopAtTwo())
    trainer.train()
    client = MlflowClient(tracking_uri=uri)
    s = tracker.summary
    assert client.get_run(s.run_id).info.status == "KILLED" and len(s.loss_history) == 2
    assert Path(s.png_path) == tmp_path / "curve" / LOSS_CURVE
    assert LOSS_CURVE in [a.path for a in client.list_artifacts(s.run_id)]


def test_counts_tokens_through_a_lora_model(canonical_table, tmp_path):
    opts = TrainOptions(method="lora", max_steps=3, batch_size=4, logging_steps=1)
    trainer, _ = build_trainer(canonical_table, "tiny://travel", SYSTEM, opts, str(tmp_path))
    tracker = TrackingCallback([], params=opts)  # no sink: counting and the summary only
    trainer.add_callback(tracker)
    trainer.train()
    assert type(trainer.model).__name__ == "PeftModelForCausalLM"
    trl_count = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h][-1]
    s = tracker.summary
    assert s.non_pad_tokens == trl_count and 0 < s.padding_efficiency < 1 and len(s.loss_history) == 3
    assert s.run_id == "" and Path(s.png_path).read_bytes()[:8] == PNG_SIGNATURE


def test_tracking_uri_and_vertex_selection(monkeypatch, slmforge_home):
    assert MlflowSink().tracking_uri == f"sqlite:///{slmforge_home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert MlflowSink().tracking_uri == "http://127.0.0.1:1"
    assert MlflowSink(tracking_uri="sqlite:///x.db").tracking_uri == "sqlite:///x.db"
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:1 does not answer"):
        tracking_sinks()  # an http server is health-checked when the sinks are made

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert [type(s) for s in tracking_sinks()] == [MlflowSink]
    monkeypatch.setenv("AIP_EXPERIMENT_NAME", "from-env")
    monkeypatch.setenv("CLOUD_ML_PROJECT_ID", "proj")
    monkeypatch.setenv("CLOUD_ML_REGION", "europe-west4")
    mlflow_sink, vertex = tracking_sinks()  # a sqlite store and Vertex: no call until start()
    assert isinstance(mlflow_sink, MlflowSink) and isinstance(vertex, VertexSink)
    assert (vertex.experiment, vertex.project, vertex.region) == ("from-env", "proj", "europe-west4")
    vertex = tracking_sinks(vertex_experiment="given", project="p2", region="us-central1")[1]
    assert (vertex.experiment, vertex.project, vertex.region) == ("given", "p2", "us-central1")


def test_flatten_params():
    flat = flatten_params({"opts": _opts(), "data": {"rows": 3, "files": ["a", "b"]}, "none": None})
    assert flat["opts.max_steps"] == str(STEPS) and flat["opts.lora_modules_to_save"] == ""
    assert flat["data.rows"] == "3" and flat["data.files"] == "a,b" and flat["none"] == "None"
    assert flatten_params(_opts())["method"] == "full"


def test_loss_curve_png(tmp_path):
    path = loss_curve_png([(1, 6.8), (2, 5.1), (3, 4.0)], tmp_path / "sub" / "curve.png")
    _assert_png(path)
    with pytest.raises(ValueError, match="empty"):
        loss_curve_png([], tmp_path / "empty.png")


def _sft_trainer(canonical_table, tmp_path, **config):
    """The build_trainer setup with SFTConfig overrides (build_trainer has no packing option)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from components.common.models import load_tokenizer, resolve_base
    from components.common.tables import read_rows
    from components.common.task import training_example

    base = resolve_base("tiny://travel")
    rows = read_rows(canonical_table)
    dataset = Dataset.from_list(
        [training_example(SYSTEM, r["prompt"], r["completion"], r["history"]) for r in rows]
    )
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        max_length=256,
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **config,
    )
    return SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base),
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(base),
    )


def test_padding_efficiency_with_and_without_packing(canonical_table, tmp_path):
    efficiency = {}
    for packing in (False, True):
        trainer = _sft_trainer(canonical_table, tmp_path / str(packing), packing=packing)
        tracker = TrackingCallback([], params={"packing": packing})
        trainer.add_callback(tracker)
        trainer.train()
        efficiency[packing] = tracker.summary.padding_efficiency
        print(f"packing={packing}: {tracker.summary}")
    assert efficiency[True] == 1.0  # bfd packing is padding-free: one flat sequence, no pad token
    assert 0.5 < efficiency[False] < 0.95, efficiency


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a sqlite store and proxied artifacts under tmp_path."""
    import psutil

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # mlflow 3.17 also starts a job runner and 7 huey consumers that outlive a stopped server (orphaned,
    # busy) and leave a folder in /dev/shm; tracking needs none of it. Off: starts in ~8 s, stops in ~1.5 s.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with (tmp_path / "server.log").open("wb") as server_log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{tmp_path / 'server.db'}",
                "--artifacts-destination",
                (tmp_path / "server-artifacts").as_uri(),
            ],
            stdout=server_log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for child in children:  # stopping the server stops its uvicorn worker; make sure by their own PIDs
            if child.is_running():
                child.kill()


def test_run_tracked_on_an_mlflow_server(canonical_table, tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    sinks = tracking_sinks("tracking-server-test")  # the URI comes from the environment
    assert sinks[0].tracking_uri == mlflow_server
    trainer, tracker, batches = _train_tracked(canonical_table, tmp_path, sinks)
    _check_run(mlflow_server, tracker, batches, tmp_path, trainer)
    stored = list((tmp_path / "server-artifacts").rglob(LOSS_CURVE))  # uploaded through the server
    assert len(stored) == 1 and stored[0].read_bytes()[:8] == PNG_SIGNATURE


def test_a_dead_tracking_server_fails_the_step_in_seconds(tmp_path, canonical_table, tiny_model):
    """Nothing listens on the port: train() stops before training with the URI named (a health check
    with a 5 s timeout, not MLflow's minutes of retries)."""
    import socket

    from components.train.core import TrainOptions, train
    from components.train.tracking import TrackingError, check_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: refused at once
        opts = TrainOptions(method="full", max_steps=2, batch_size=4)
        with pytest.raises(TrackingError, match=r"\[TRACK-001\] the MLflow tracking server http://127.0.0.1"):
            train(
                canonical_table,
                "tiny://travel",
                "sys",
                opts,
                tmp_path / "m",
                experiment="t",
                tracking_uri=dead,
            )
    assert not (tmp_path / "m" / "model.safetensors").exists()  # stopped before training
    check_server("sqlite:///x.db")  # not a server: nothing to check
