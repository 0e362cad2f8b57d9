"""Training on the tiny model: loss on completion tokens only, loss goes down, weights change."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from components.common.models import load_for_inference, read_model_info
from components.train.core import TrainOptions, build_trainer, train

SYSTEM = "You turn a travel request into a JSON list of commands."


def test_loss_is_on_completion_tokens_only(canonical_table, tmp_path):
    from components.common.tables import read_rows

    trainer, _ = build_trainer(
        canonical_table, "tiny://travel", SYSTEM, TrainOptions(method="full", max_steps=1), str(tmp_path)
    )
    row = read_rows(canonical_table)[0]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    trained = labels[labels != -100]
    tok = trainer.processing_class
    assert tok.decode(trained) == row["completion"] + "<|im_end|>\n"
    assert row["prompt"] in tok.decode(batch["input_ids"][0])  # the prompt is there, just not in the loss


def test_full_fine_tune_learns(canonical_table, tmp_path, tiny_model, capsys):
    opts = TrainOptions(method="full", max_steps=40, batch_size=16, learning_rate=3e-3, logging_steps=5)
    result = train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model")
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train progress:")]
    assert (
        len(progress) == 9 and progress[-1]
    )  # step 1 (logging_first_step), then every 5.startswith("train progress: step 40/40 · loss ")
    assert all(torch.isfinite(torch.tensor(result.loss_history)))
    assert result.final_loss < 0.5 * result.first_loss, result.loss_history
    assert result.steps == 40 and result.trainable_params == result.total_params
    before = load_file(tiny_model / "model.safetensors")
    after = load_file(tmp_path / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert read_model_info(tmp_path / "model")["kind"] == "full"
    model, tok = load_for_inference(str(tmp_path / "model"))
    assert tok.pad_token_id != tok.eos_token_id and not model.training


def test_lora_learns_and_saves_an_adapter(canonical_table, tmp_path, tiny_model):
    opts = TrainOptions(
        method="lora",
        max_steps=40,
        batch_size=16,
        learning_rate=3e-3,
        lora_r=16,
        lora_alpha=32,
        lora_modules_to_save=["embed_tokens", "lm_head"],
        logging_steps=5,
    )
    result = train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "adapter")
    assert result.final_loss < 0.6 * result.first_loss, result.loss_history
    assert result.trainable_params < result.total_params
    out = tmp_path / "adapter"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    info = read_model_info(out)
    assert info["kind"] == "lora" and info["base_model"] == "tiny://travel"
    model, _ = load_for_inference(str(out))
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_unknown_method(canonical_table, tmp_path):
    with pytest.raises(ValueError, match="method='dora': use full, lora or qlora"):
        train(canonical_table, "tiny://travel", SYSTEM, TrainOptions(method="dora"), tmp_path / "m")


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="the CPU error; GPU runs QLoRA (gpu tests)"
)
def test_qlora_on_cpu_is_a_clear_error(canonical_table, tmp_path):
    with pytest.raises(
        ValueError, match=r"qlora loads the base model in 4-bit NF4.*need a CUDA GPU.*use model.method lora"
    ):
        train(canonical_table, "tiny://travel", SYSTEM, TrainOptions(method="qlora"), tmp_path / "m")


def test_backend_resolution():
    from components.train.core import resolve_backend

    assert resolve_backend("auto", cuda=False) == "hf" and resolve_backend("hf", cuda=True) == "hf"
    with pytest.raises(ValueError, match="unsloth needs a CUDA GPU and the unsloth package"):
        resolve_backend("unsloth", cuda=False)


def test_packing_trains_padding_free(canonical_table, tmp_path):
    # sdpa by name: on CPU no packed kernel exists (components/train/speed.py); correct, dense attention
    opts = TrainOptions(
        method="full", max_steps=3, batch_size=4, logging_steps=1, packing=True, attn_implementation="sdpa"
    )
    result = train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "m", experiment="packing-test")
    assert result.tracking.padding_efficiency == 1.0 and result.tracking.tokens > 0
    assert math.isfinite(result.final_loss)


def test_gradient_accumulation_keeps_the_optimizer_batch(canonical_table, tmp_path):
    opts = TrainOptions(method="full", max_steps=2, batch_size=8, grad_accum=4, logging_steps=1)
    result = train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "m", experiment="accum-test")
    assert result.steps == 2 and result.tracking.tokens > 0
    with pytest.raises(ValueError, match="grad_accum=3 must divide batch_size=8"):
        TrainOptions(batch_size=8, grad_accum=3).validate()


def test_validation_loss_is_measured_on_the_slice_and_drawn_with_the_training_loss(
    canonical_table, tmp_path, travel_rows, capsys
):
    """Every eval_steps and at the last step, the validation loss over the slice: equal to the mean
    cross-entropy of the model on the slice's completion tokens computed here by hand; logged with its
    step, shown in the progress lines, reported (final/best) and drawn on the loss curve."""
    from components.train.tracking import TrackingCallback

    validation = _slice(travel_rows, tmp_path / "validation.parquet")
    opts = TrainOptions(
        method="full", max_steps=25, batch_size=16, learning_rate=3e-3, logging_steps=5, eval_steps=10
    )
    tracker = TrackingCallback([], {}, tmp_path / "curve")
    result = train(
        canonical_table,
        "tiny://travel",
        SYSTEM,
        opts,
        tmp_path / "model",
        [tracker],
        validation_path=validation,
    )
    assert [step for step, _ in result.eval_history] == [10, 20, 25]  # every 10 steps, and the last
    assert result.metrics()["final_eval_loss"] == result.eval_history[-1][1]
    assert result.metrics()["best_eval_loss"] == min(v for _, v in result.eval_history)
    assert result.eval_history[-1][1] < result.eval_history[0][1]
    assert tracker.summary.eval_history == result.eval_history
    out = capsys.readouterr().out
    assert "train validation: step 25 · loss " in out
    assert (
        " · validation loss " in [line for line in out.splitlines() if line.startswith("train progress:")][-1]
    )

    # by hand: the trained model on the slice's examples as the trainer batches them, loss on the
    # completion tokens only (labels -100 elsewhere), averaged over those tokens
    trained = TrainOptions(method="full", max_steps=1, eval_steps=10)
    trainer, _ = build_trainer(
        canonical_table, str(tmp_path / "model"), SYSTEM, trained, str(tmp_path / "s"), (), validation
    )
    batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(len(trainer.eval_dataset))])
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    shift_logits, shift_labels = (
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
    )
    manual = torch.nn.functional.cross_entropy(shift_logits.float(), shift_labels, ignore_index=-100)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(manual.item(), rel=1e-4)
    assert result.eval_history[-1][1] == pytest.approx(manual.item(), rel=1e-4)
    assert (tmp_path / "curve" / "loss_curve.png").stat().st_size > 0


def test_no_slice_or_eval_steps_zero_means_no_validation_pass(canonical_table, tmp_path):
    opts = TrainOptions(method="full", max_steps=3, batch_size=8, eval_steps=0)
    assert train(canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "m").eval_history == []
    with pytest.raises(ValueError, match="eval_steps=-1"):
        TrainOptions(eval_steps=-1).validate()


def test_early_stopping_stops_at_the_right_pass_and_a_resumed_run_keeps_its_best(tmp_path):
    """A scripted validation-loss history, patience 2: best at the 2nd pass, stop at the 4th (two passes
    without improvement). An attempt resumed after the 3rd pass (best.json beside the checkpoints) carries
    the best so far and the count, and stops at the same pass."""
    from components.train.watch import Selection

    history = [(10, 0.9), (20, 0.5), (30, 0.6), (40, 0.55), (50, 0.1)]
    opts = TrainOptions(select="last", early_stopping_patience=2)
    seen = Selection(opts, tmp_path / "one")
    stops = [seen.observe(step, {"eval_loss": v}, save=None) for step, v in history[:4]]
    assert stops == [False, False, False, True] and seen.stopped_at == 40
    assert (seen.best, seen.best_step) == (0.5, 20)
    assert seen.describe(40) == (40, "last step 40; early stopping at step 40")

    first = Selection(opts, tmp_path / "two")
    for step, v in history[:3]:
        assert not first.observe(step, {"eval_loss": v}, save=None)
    resumed = Selection(opts, tmp_path / "two")  # a new attempt reads best.json
    assert (resumed.best, resumed.best_step, resumed.bad) == (0.5, 20, 1)
    assert resumed.observe(40, {"eval_loss": 0.55}, save=None) and resumed.stopped_at == 40

    saved = []
    best = Selection(TrainOptions(select="best"), tmp_path / "three")
    for step, v in history:
        best.observe(step, {"eval_loss": v}, save=lambda folder, step=step: saved.append(step))
    assert saved == [10, 20, 50] and best.best_step == 50 and best.stopped_at == 0
    with pytest.raises(ValueError, match="select='middle'"):
        TrainOptions(select="middle").validate()


def test_select_best_writes_the_best_validation_pass_weights(canonical_table, tmp_path, travel_rows):
    """select: best, checkpointing on: the model written is byte for byte the weights saved at the pass with
    the lowest validation loss (kept beside the checkpoints), and the step and the reason are recorded."""
    validation = _slice(travel_rows, tmp_path / "validation.parquet", slice(400, 410))
    opts = TrainOptions(
        method="full",
        max_steps=20,
        batch_size=16,
        learning_rate=3e-3,
        eval_steps=5,
        select="best",
        checkpoint_dir=str(tmp_path / "checkpoints"),
        checkpoint_steps=10,
    )
    result = train(
        canonical_table, "tiny://travel", SYSTEM, opts, tmp_path / "model", validation_path=validation
    )
    best_step, best_value = min(result.eval_history, key=lambda e: (e[1], e[0]))
    assert result.selected_step == best_step and result.metrics()["selected_step"] == best_step
    assert result.selection.startswith(f"best eval_loss {best_value:.4f} at step {best_step} of 20")
    kept = tmp_path / "checkpoints" / "best"
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == (
        kept / "model.safetensors"
    ).read_bytes()
    assert read_model_info(tmp_path / "model")["selected"] == result.selection


@pytest.mark.parametrize(
    "overrides",
    [
        ("train.select=best",),  # the demo config has no validation slice
        ("train.early_stopping_patience=3",),
        ("data.split.validation_fraction=0.05", "train.eval_steps=0", "train.select=best"),
    ],
)
def test_selection_without_a_validation_slice_names_its_rule(overrides):
    from pathlib import Path

    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    demo = Path(__file__).resolve().parents[2] / "examples" / "travel" / "config.yaml"
    with pytest.raises(ConfigError, match=r"\[TRAIN-005\].*Fix: set data.split.validation_fraction > 0"):
        load_config(demo, overrides)
    watched = ("data.split.validation_fraction=0.05", "train.select=best", "train.early_stopping_patience=3")
    assert load_config(demo, watched).train.select == "best"


def _slice(travel_rows, path, rows=slice(400, 412)):
    from components.common.tables import write_rows

    write_rows([{k: r[k] for k in ("id", "group", "prompt", "completion")} for r in travel_rows[rows]], path)
    return path


def _task_opts(**overrides) -> TrainOptions:
    """A short full fine-tune that measures the travel task's metrics on the slice at every pass."""
    import json
    from pathlib import Path

    schema = Path(__file__).resolve().parents[2] / "examples" / "travel" / "schema.json"
    settings = dict(
        method="full",
        max_steps=40,
        batch_size=16,
        learning_rate=3e-3,
        logging_steps=10,
        eval_steps=20,
        task_eval_rows=64,
        task_type="structured",
        output_schema=json.loads(schema.read_text()),
        max_new_tokens=96,
        decoding="constrained",
    )
    return TrainOptions(**{**settings, **overrides})


def _evaluate_written(tmp_path, validation, opts: TrainOptions):
    """The evaluate step's scores of the model written to tmp_path/model on ``validation``, decoded as
    ``opts`` decodes its task metrics."""
    from components.common.scoring import TaskSpec
    from components.evaluate.core import evaluate

    return evaluate(
        str(tmp_path / "model"),
        validation,
        SYSTEM,
        TaskSpec("structured", opts.output_schema),
        tmp_path / "predictions.parquet",
        max_new_tokens=opts.max_new_tokens,
        decoding=opts.decoding,
    )


def test_task_metrics_at_every_validation_pass_are_the_evaluators_and_go_to_mlflow(
    canonical_table, tmp_path, travel_rows, capsys
):
    """Each validation pass generates for the slice's rows (fewer than task_eval_rows: all of them) with the
    evaluator's constrained decoding and scores them with the task's scorer: the last pass (the weights
    written, select last) gives exactly what the evaluate step computes on those rows with the written
    model. The metrics are logged to MLflow (a real sqlite store) at each pass, shown live, reported as
    final_eval_<metric> with the validation wall time, and the speed window leaves the passes out."""
    from mlflow import MlflowClient

    validation = _slice(travel_rows, tmp_path / "validation.parquet")
    opts = _task_opts()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(
        canonical_table,
        "tiny://travel",
        SYSTEM,
        opts,
        tmp_path / "model",
        experiment="task-metrics",
        tracking_uri=uri,
        validation_path=validation,
    )
    scored = _evaluate_written(tmp_path, validation, opts)
    expected = {f"eval_{k}": scored.metrics[k] for k in ("exact_match", "schema_validity", "field_match")}
    assert {k: result.task_metrics[k] for k in expected} == expected
    assert result.task_metrics["eval_cut_off"] == scored.metrics["cut_off"]
    assert "eval_accuracy" not in result.task_metrics and "eval_entropy" not in result.task_metrics
    metrics = result.metrics()
    assert metrics["final_eval_exact_match"] == scored.metrics["exact_match"]
    assert 0 < metrics["validation_s"] < metrics["runtime_s"]

    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(result.tracking.run_id, "eval_schema_validity")
    assert sorted(m.step for m in history) == [20, 40]
    assert sorted(history, key=lambda m: m.step)[-1].value == scored.metrics["schema_validity"]
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("train validation: step 40"))
    assert f"exact_match {scored.metrics['exact_match']:.3f}" in line and "cut_off" in line


def test_a_task_metric_as_select_metric_keeps_the_highest_pass(tmp_path):
    """eval_<task metric>: higher is better (eval_loss: lower); the record carries the metric's name."""
    import json

    from components.train.watch import Selection

    opts = _task_opts(select="best", select_metric="eval_exact_match", early_stopping_patience=2)
    saved = []
    seen = Selection(opts, tmp_path / "best")
    history = [(10, 0.2), (20, 0.6), (30, 0.5), (40, 0.6)]  # a tie is not better
    stops = [seen.observe(s, {"eval_exact_match": v}, lambda f, s=s: saved.append(s)) for s, v in history]
    assert stops == [False, False, False, True] and seen.stopped_at == 40
    assert saved == [10, 20] and (seen.best, seen.best_step) == (0.6, 20)
    assert json.loads((tmp_path / "best" / "best.json").read_text())["metric"] == "eval_exact_match"
    with pytest.raises(ValueError, match=r"select_metric eval_loss \(task none"):
        TrainOptions(select_metric="eval_exact_match").validate()
    with pytest.raises(ValueError, match="select_metric='eval_accuracy'"):
        _task_opts(select_metric="eval_accuracy").validate()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("train.select_metric=eval_accuracy",), "a structured task measures eval_loss, eval_json_validity"),
        (("train.select_metric=exact_match",), "train.select_metric='exact_match'"),
        (("train.select_metric=eval_exact_match", "train.task_eval_rows=0"), "train.task_eval_rows=0"),
    ],
)
def test_a_select_metric_no_pass_measures_names_its_rule(overrides, message):
    from pathlib import Path

    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    demo = Path(__file__).resolve().parents[2] / "examples" / "travel" / "config.yaml"
    with pytest.raises(ConfigError, match=r"\[TRAIN-006\]") as error:
        load_config(demo, overrides)
    assert message in str(error.value) and "Fix: use eval_loss, or eval_<metric>" in str(error.value)
    cfg = load_config(demo, ("data.split.validation_fraction=0.05", "train.select_metric=eval_exact_match"))
    assert cfg.train.select_metric == "eval_exact_match"


def test_data_parallel_processes_share_the_task_metric_rows(canonical_table, tmp_path, travel_rows):
    """Two processes (torchrun, gloo): each generates half the sample, the answers are gathered, and the
    metrics equal one process's evaluation of the written model on all the rows."""
    from components.train.distributed import TrainJob, train_on_node

    validation = _slice(travel_rows, tmp_path / "validation.parquet", slice(400, 411))  # odd: unequal halves
    opts = _task_opts(max_steps=20, batch_size=8, eval_steps=20)
    model = str(tmp_path / "model")
    job = TrainJob(
        str(canonical_table), "tiny://travel", SYSTEM, opts, model, validation_path=str(validation)
    )
    result = train_on_node(1, 2, job)
    assert result.world_size == 2
    scored = _evaluate_written(tmp_path, validation, opts)
    assert result.task_metrics["eval_field_match"] == scored.metrics["field_match"]
    assert result.task_metrics["eval_schema_validity"] == scored.metrics["schema_validity"]
