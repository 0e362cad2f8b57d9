"""``slmforge runs list`` and ``slmforge runs compare`` through the real CLI.

MLflow: runs written by the train step's own tracking code (components/train/tracking.py MlflowSink) into
a sqlite store. Vertex: the real google-cloud-aiplatform client reads an experiment from the loopback
stand-in (tests/loopback_vertex.py), whose metadata store holds what a pipeline run leaves there: the
experiment, the run contexts associated with it, each run's parameters (its ``system.Run`` execution) and
``system.Metrics`` artifacts. ``aiplatform.get_experiment_df`` builds its dataframe from those calls."""

from __future__ import annotations

import re

import pytest
import yaml
from loopback_vertex import LoopbackVertex
from typer.testing import CliRunner

from pipelines.cli import app

PROJECT, REGION = "test-project", "us-central1"


def _cli(*args: str):
    return CliRunner().invoke(app, ["runs", *args], catch_exceptions=False, env={"COLUMNS": "250"})


def _train_run(uri: str, experiment: str, name: str, params: dict, losses: list[float]) -> str:
    """A run as the train step logs it: params at start, per-step metrics, FINISHED at the end."""
    from components.train.tracking import MlflowSink, flatten_params

    sink = MlflowSink(experiment, uri, run_name=name)
    run_id = sink.start(flatten_params(params))
    for step, loss in enumerate(losses, start=1):
        sink.log_metrics({"loss": loss, "tokens_per_s": 1000.0 + step}, step)
    sink.end("FINISHED")
    return run_id


@pytest.fixture()
def store(tmp_path) -> tuple[str, dict[str, str]]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = {
        "base_model": "tiny://travel",
        "method": "full",
        "max_steps": 3,
        "learning_rate": 0.003,
        "lora_r": 16,
    }
    ids = {
        "lr-3e-3": _train_run(uri, "travel-commands", "lr-3e-3", recipe, [2.0, 1.5, 0.9]),
        "lr-1e-3": _train_run(
            uri, "travel-commands", "lr-1e-3", {**recipe, "learning_rate": 0.001}, [2.0, 1.8, 1.4]
        ),
        "other": _train_run(uri, "support-tickets", "other", {**recipe, "method": "lora"}, [3.0, 2.0, 1.0]),
    }
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)  # a registration run in the same store: not a training run
    exp = client.get_experiment_by_name("travel-commands").experiment_id
    client.set_terminated(client.create_run(exp, tags={"slmforge.stage": "register"}).info.run_id)
    return uri, ids


def test_list_shows_training_runs_newest_first(store):
    uri, ids = store
    result = _cli("list", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert f"3 training runs in {uri}" in " ".join(result.output.split())  # the title wraps to the table
    lines = [line for line in result.output.splitlines() if any(i[:8] in line for i in ids.values())]
    assert [next(n for n, i in ids.items() if i[:8] in line) for line in lines] == [
        "other",
        "lr-1e-3",
        "lr-3e-3",
    ]
    assert re.search(r"lr-3e-3\s.*travel-commands\s.*FINISHED\s.*\s0\.9\s", lines[2]), lines[
        2
    ]  # the final loss
    narrowed = _cli("list", "--tracking-uri", uri, "--experiment", "support-tickets")
    assert "1 training runs" in narrowed.output and ids["other"][:8] in narrowed.output
    missing = _cli("list", "--tracking-uri", uri, "--experiment", "nope")
    assert missing.exit_code == 2 and "no experiment 'nope'" in missing.output


def test_compare_marks_the_rows_that_differ(store):
    uri, ids = store
    result = _cli("compare", ids["lr-3e-3"][:8], "lr-1e-3", "--tracking-uri", uri)  # an id prefix and a name
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 7:
            rows[(cells[2], cells[3])] = (cells[1], cells[4], cells[5])
    assert rows[("param", "learning_rate")] == ("≠", "0.003", "0.001")
    assert rows[("param", "method")] == ("", "full", "full")
    assert rows[("param", "max_steps")] == ("", "3", "3")
    assert rows[("metric", "loss")] == ("≠", "0.9", "1.4")  # the last logged value
    assert rows[("metric", "tokens_per_s")] == ("", "1003", "1003")

    only = _cli("compare", ids["lr-3e-3"], ids["lr-1e-3"], "--tracking-uri", uri, "--diff")
    assert "learning_rate" in only.output and "max_steps" not in only.output


def test_differing_rows_are_highlighted():
    from pipelines.cli_runs import RunRecord, compare_table

    a = RunRecord("a" * 32, "a", "e", "FINISHED", params={"lr": "0.001", "r": "16"}, metrics={"loss": 0.5})
    b = RunRecord("b" * 32, "b", "e", "FINISHED", params={"lr": "1e-3", "r": "8"}, metrics={"loss": 0.5})
    table = compare_table([a, b])
    styles = {table.columns[2]._cells[i]: str(row.style) for i, row in enumerate(table.rows)}
    assert styles == {"lr": "None", "r": "bold yellow", "loss": "None"}  # 0.001 == 1e-3 as numbers


def test_default_store_and_bad_references(store, tmp_path, monkeypatch, travel_config):
    uri, ids = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where the train step logs when no tracking_uri is set
    assert ids["lr-3e-3"][:8] in _cli("list").output
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "empty-home"))  # the embedded store: empty
    assert "no training runs in sqlite:///" in _cli("list").output
    raw = yaml.safe_load((travel_config_path := _config_path()).read_text())
    raw["registry"] = {**raw.get("registry", {}), "tracking_uri": uri}
    raw["data"]["train"] = str(travel_config_path.parent / raw["data"]["train"])
    raw["task"]["schema"] = str(travel_config_path.parent / raw["task"]["schema"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert ids["lr-1e-3"][:8] in _cli("list", "--config", str(config)).output  # registry.tracking_uri

    for refs, message in [
        ((ids["lr-3e-3"], "nope"), "'nope' names no run"),
        ((ids["lr-3e-3"], ""), "names 3 runs"),
    ]:
        result = _cli("compare", *refs, "--tracking-uri", uri)
        assert result.exit_code == 2 and message in result.output, result.output
    assert (
        _cli("compare", ids["lr-3e-3"], "--tracking-uri", uri).exit_code == 2
    )  # one run: nothing to compare


def _config_path():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "examples" / "travel" / "config.yaml"


# -- Vertex AI Experiments ------------------------------------------------------------------------------
def _seed_experiment(
    vertex: LoopbackVertex, experiment: str, runs: dict[str, tuple[dict, list[dict]]]
) -> None:
    """What `submit` and the pipeline runs leave in the metadata store: the experiment (created by the
    SDK on submit), each run's context associated with it, the run's parameters and Metrics artifacts."""
    store = f"projects/{PROJECT}/locations/{REGION}/metadataStores/default"
    exp = f"{store}/contexts/{experiment}"
    vertex.pipelines.contexts[exp] = {
        "name": exp,
        "displayName": experiment,
        "schemaTitle": "system.Experiment",
        "schemaVersion": "0.0.2",
        "metadata": {"experiment_deleted": False},
    }
    for job_id, (params, metrics) in runs.items():
        vertex.pipelines.add_run_metadata(
            f"projects/{PROJECT}/locations/{REGION}/pipelineJobs/{job_id}", params, metrics
        )
        vertex.pipelines.children.setdefault(exp, []).append(f"{store}/contexts/{job_id}")


def test_vertex_experiment_list_and_compare(monkeypatch):
    with LoopbackVertex() as vertex:
        monkeypatch.setenv("SLMFORGE_VERTEX_ENDPOINT", vertex.endpoint)
        _seed_experiment(
            vertex,
            "travel-commands",
            {
                "travel-commands-20261121-100000": (
                    {"learning_rate": 0.003, "max_steps": 6000, "method": "full"},
                    [{"exact_match": 0.92, "schema_validity": 1.0}],
                ),
                "travel-commands-20261121-120000": (
                    {"learning_rate": 0.001, "max_steps": 6000, "method": "full"},
                    [{"exact_match": 0.81, "schema_validity": 1.0}],
                ),
            },
        )
        target = ("--vertex", "--project", PROJECT, "--region", REGION, "--experiment", "travel-commands")
        listed = _cli("list", *target)
        compared = _cli(
            "compare", "travel-commands-20261121-100000", "travel-commands-20261121-120000", *target
        )
    assert listed.exit_code == 0, listed.output
    assert "2 runs in Vertex AI experiment travel-commands (test-project, us-central1)" in listed.output
    assert "travel-commands-20261121-100000" in listed.output and "COMPLETE" in listed.output
    assert compared.exit_code == 0, compared.output
    text = compared.output
    assert re.search(r"≠ │ param\s+│ learning_rate\s+│\s+0\.003 │\s+0\.001 │", text), text
    assert re.search(r"│\s+│ param\s+│ max_steps\s+│\s+6000 │\s+6000 │", text), text
    assert re.search(r"≠ │ metric │ exact_match\s+│\s+0\.92 │\s+0\.81 │", text), text
    # the SDK asked the metadata API what a dataframe needs: the experiment, its runs, params, metrics
    asked = [r.path.rsplit("/", 1)[-1] for r in vertex.requests if r.method == "GET"]
    assert {"travel-commands", "contexts", "executions", "artifacts"} <= set(asked), asked


def test_vertex_dataframe_columns_become_runs():
    """The documented dataframe shape (experiment_name, run_name, run_type, state, param.*, metric.*,
    time_series_metric.*), NaN where a run lacks a column."""
    import pandas as pd

    from pipelines.cli_runs import runs_from_dataframe

    df = pd.DataFrame(
        [
            {
                "experiment_name": "e",
                "run_name": "r1",
                "run_type": "system.PipelineRun",
                "state": "COMPLETE",
                "param.lr": 0.1,
                "metric.exact_match": 0.5,
                "time_series_metric.loss": 0.25,
            },
            {
                "experiment_name": "e",
                "run_name": "r2",
                "run_type": "system.ExperimentRun",
                "state": "RUNNING",
                "param.lr": float("nan"),
                "metric.exact_match": 0.7,
                "time_series_metric.loss": float("nan"),
            },
        ]
    )
    r1, r2 = runs_from_dataframe(df, "e")
    assert (r1.id, r1.status, r1.params, r1.metrics) == (
        "r1",
        "COMPLETE",
        {"lr": "0.1"},
        {"exact_match": 0.5, "loss": 0.25},
    )
    assert (r2.params, r2.metrics) == ({}, {"exact_match": 0.7})


def test_the_local_log_sink_reports_task_states_and_training_progress(tmp_path):
    """What `slmforge run` shows while a pipeline runs: task start/finish and the train step's progress."""
    from pipelines.local import _LogSink

    events = []
    with open(tmp_path / "log", "w") as log:
        sink = _LogSink(log, lambda task, state: events.append((task, state)))
        sink.write("Executing task 'train-op'\ntrain progress: step 10/300 · loss 1.2345 · ETA 2m05s\n")
        sink.write("\x1b[32mTask 'train-op' finished with status SUCCESS\x1b[0m\n")
    assert events == [
        ("train-op", "running"),
        ("train-op", "progress step 10/300 · loss 1.2345 · ETA 2m05s"),
        ("train-op", "success"),
    ]
    assert "train progress" in (tmp_path / "log").read_text()


def test_a_failed_run_shows_the_steps_own_error_without_colour_codes():
    from pipelines.local import failure_lines

    log = (
        "Executing task 'ingest-op'\n\x1b[31mTraceback (most recent call last):\n  File \"core.py\"\n"
        "components.common.events.DataError: 5 of 205 rows rejected (2.44% > 1.00%)\x1b[0m\n"
        "\x1b[31mTask 'ingest-op' finished with status FAILURE\x1b[0m\nRuntimeError: Task ingest-op failed\n"
    )
    error, tail = failure_lines(log)
    assert error == "components.common.events.DataError: 5 of 205 rows rejected (2.44% > 1.00%)"
    assert not any("\x1b" in line for line in tail)
