"""train tracking: per-step loss, learning rate, grad norm, tokens/s and padding efficiency, sent to MLflow
and (when configured) Vertex AI Experiments, plus a loss-curve PNG at the end.

Tokens are counted in a forward pre-hook on the model, not in the data collator: accelerate's dataloader
collates one batch ahead of the one being trained (a 4-step run collates 5 batches), so a collator count
would include a batch the model never saw. The hook sees exactly the micro-batches of training forwards.

Imports transformers at module level (the callback subclasses TrainerCallback): import this module inside
functions, never from a component.py or pipeline module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from components.register.core import default_tracking_uri

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "slmforge-train"
LOSS_CURVE = "loss_curve.png"
_MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values
_PARAMS_PER_BATCH = 100  # MLflow log_batch limit
_BAD_KEY_CHARS = re.compile(r"[^\w./ -]")  # MLflow keys: alphanumerics, _ - . / and space


@dataclass
class TrackingSummary:
    run_id: str = ""  # the first sink's run id: MLflow's with tracking_sinks ("" before train begin)
    tokens: int = 0  # tokens fed to training forwards, padding included
    non_pad_tokens: int = 0  # of which real tokens (attention_mask == 1)
    padding_efficiency: float = 0.0  # non_pad_tokens / tokens; 1.0 = no padding (packing, padding-free)
    tokens_per_s: float = 0.0  # non-pad tokens per second of training, time spent logging excluded
    loss_history: list[tuple[int, float]] = field(default_factory=list)  # (global step, loss)
    eval_history: list[tuple[int, float]] = field(default_factory=list)  # (global step, validation loss)
    png_path: str = ""  # loss curve, written at train end ("" when no loss was logged)


class Sink(Protocol):
    """Where tracked values go. ``start`` returns the sink's run id; ``end`` takes an MLflow run status:
    FINISHED, FAILED or KILLED (stopped before max_steps, e.g. preempted)."""

    def start(self, params: dict[str, str]) -> str: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def end(self, status: str) -> None: ...


def flatten_params(params: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Options as flat string params: nested keys joined with ".", lists comma-joined, dataclasses expanded."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    out: dict[str, str] = {}
    for key, value in dict(params).items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple, set)):
            out[name] = ",".join(str(v) for v in value)[:_MAX_PARAM_CHARS]
        else:
            out[name] = str(value)[:_MAX_PARAM_CHARS]
    return out


# Seconds a tracking server has to answer its health check before the step gives up on it.
HEALTH_TIMEOUT_S = 5.0


class TrackingError(RuntimeError):
    """The tracking server the run is configured for does not answer."""


def check_server(tracking_uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """For an http(s) tracking URI, GET ``<uri>/health`` (what ``mlflow server`` answers) and raise
    TrackingError naming the URI when it does not answer: MLflow's own client retries with back-off for
    minutes, and a dead server would otherwise stall the train step silently. Other URIs: nothing to do."""
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # http(s) only: checked above
            if response.status < 500:
                return
            why = f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        if e.code < 500:  # answered (a proxy that needs auth, a server without /health): it is up
            return
        why = f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        why = str(getattr(e, "reason", e))
    raise TrackingError(
        f"[TRACK-001] the MLflow tracking server {tracking_uri} does not answer ({why}, {timeout:g} s). "
        "Fix: start it, or point registry.tracking_uri / $MLFLOW_TRACKING_URI at a running one "
        "(empty = the embedded sqlite store)"
    )


class MlflowSink:
    """An MLflow run. Tracking URI: the argument, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite
    store of components.register (``$SLMFORGE_HOME/mlflow.db``)."""

    def __init__(self, experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str = "", run_name: str = ""):
        self.experiment = experiment
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        self.run_name = run_name
        self.run_id = ""
        self._client = None

    def start(self, params: dict[str, str]) -> str:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        run = self._client.create_run(
            self._experiment_id(), run_name=self.run_name or None, tags={"slmforge.stage": "train"}
        )
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[i : i + _PARAMS_PER_BATCH])
        return self.run_id

    def _experiment_id(self) -> str:
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        artifact_location = None
        if self.tracking_uri.startswith("sqlite:///"):  # artifacts beside the db, not in ./mlruns of the cwd
            db = Path(self.tracking_uri.removeprefix("sqlite:///")).resolve()
            artifact_location = (db.parent / "mlartifacts").as_uri()
        return self._client.create_experiment(self.experiment, artifact_location=artifact_location)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        batch = [Metric(k, v, now_ms, step) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path) -> None:
        self._client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        self._client.set_terminated(self.run_id, status)


class VertexSink:
    """A Vertex AI Experiments run: params, and time-series metrics (the experiment's backing Vertex
    TensorBoard; the SDK creates the default one when none is set). No file artifacts: the loss curve goes
    to MLflow only. Every call goes to the Vertex API; nothing happens before ``start``."""

    def __init__(self, experiment: str, project: str = "", region: str = "", run_name: str = ""):
        self.experiment = experiment
        self.project = project
        self.region = region
        self.run_name = run_name

    def start(self, params: dict[str, str]) -> str:
        from google.cloud import aiplatform

        aiplatform.init(
            experiment=self.experiment, project=self.project or None, location=self.region or None
        )
        env_run = os.environ.get("AIP_EXPERIMENT_RUN_NAME", "")
        if self.run_name or not env_run:
            # Run names: lowercase letters, digits and "-", unique within the experiment.
            name = self.run_name or f"slmforge-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            run_id = aiplatform.start_run(name).resource_name
        else:  # a Vertex job created the run: the SDK resolves it from AIP_EXPERIMENT_RUN_NAME on first use
            run_id = env_run
        aiplatform.log_params(dict(params))
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from google.cloud import aiplatform

        aiplatform.log_time_series_metrics(metrics, step=step)

    def log_artifact(self, path: Path) -> None:
        pass  # Vertex Experiments stores no files; see MlflowSink

    def end(self, status: str) -> None:
        from google.cloud import aiplatform
        from google.cloud.aiplatform_v1.types import Execution

        states = {"FINISHED": Execution.State.COMPLETE, "KILLED": Execution.State.CANCELLED}
        aiplatform.end_run(state=states.get(status, Execution.State.FAILED))


def tracking_sinks(
    experiment: str = DEFAULT_EXPERIMENT,
    tracking_uri: str = "",
    *,
    vertex_experiment: str = "",
    project: str = "",
    region: str = "",
    run_name: str = "",
) -> list[Sink]:
    """MLflow always; Vertex AI Experiments too when ``vertex_experiment`` or ``$AIP_EXPERIMENT_NAME`` names
    one (project/region: the arguments, else ``$CLOUD_ML_PROJECT_ID``/``$CLOUD_ML_REGION`` set on Vertex
    jobs, else the SDK's defaults). Reads the environment now, at call time."""
    sinks: list[Sink] = [MlflowSink(experiment, tracking_uri, run_name)]
    check_server(sinks[0].tracking_uri)  # seconds, not MLflow's minutes of retries, before the model loads
    vertex_experiment = vertex_experiment or os.environ.get("AIP_EXPERIMENT_NAME", "")
    if vertex_experiment:
        project = project or os.environ.get("CLOUD_ML_PROJECT_ID", "")
        region = region or os.environ.get("CLOUD_ML_REGION", "")
        sinks.append(VertexSink(vertex_experiment, project, region, run_name))
    return sinks


class TokenCounter:
    """Tokens of the batches a model is fed: all (padding included) and non-pad.

    Non-pad = ``attention_mask.sum()``; a batch without an attention mask (TRL padding-free / packing:
    sequences concatenated, boundaries in ``position_ids``) has no padding, so all its tokens count.
    The non-pad sum stays a tensor on the batch's device until read, so counting adds no host sync.
    """

    def __init__(self) -> None:
        self.tokens = 0
        self._non_pad: Any = 0

    def add(self, batch: Mapping[str, Any]) -> None:
        ids = batch.get("input_ids")
        if ids is None:  # inputs_embeds only: nothing to count
            return
        self.tokens += ids.numel()
        mask = batch.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            self._non_pad = self._non_pad + mask.sum()
        else:
            self._non_pad = self._non_pad + ids.numel()

    @property
    def non_pad_tokens(self) -> int:
        return int(self._non_pad)


def loss_curve_png(
    history: Sequence[tuple[int, float]],
    path: str | Path,
    eval_history: Sequence[tuple[int, float]] = (),
) -> Path:
    """A PNG of training loss (and the validation loss, when measured) against optimizer step, on a log
    scale when the losses span more than a factor of 10 (a curve that falls fast then flattens). Uses
    matplotlib's Agg canvas directly (no pyplot, no global backend switch), so it works headless and in
    threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not history:
        raise ValueError("loss history is empty: nothing to plot (was any step logged?)")
    steps = [s for s, _ in history]
    losses = [v for _, v in history]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, losses, marker="o" if len(history) <= 50 else None, markersize=3, label="training")
    if eval_history:
        ax.plot(*zip(*eval_history, strict=True), marker="s", markersize=4, label="validation")
        ax.legend()
    every = [*losses, *(v for _, v in eval_history)]
    if min(every) > 0 and max(every) / min(every) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title("training and validation loss" if eval_history else "training loss")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _numeric(logs: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        if isinstance(value, (bool, str)) or value is None:
            continue
        try:
            out[_BAD_KEY_CHARS.sub("_", key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class TrackingCallback(TrainerCallback):
    """Per logging event: every numeric value the trainer logs (loss, learning_rate, grad_norm, and TRL's
    entropy, mean_token_accuracy, num_tokens, ...) plus, on training-step logs:

    - ``tokens_per_s``: non-pad tokens per second over the window since the previous log;
    - ``padding_efficiency``: non-pad / all tokens since train begin; ``padding_efficiency_window`` for
      the window.

    Params (flattened) are logged once at train begin; at train end the loss curve PNG is written to
    ``artifact_dir`` (default: the trainer's output_dir), logged as an artifact, and the runs are ended.
    Only the main process logs; counts are of this process's batches. If ``trainer.train()`` raises,
    call ``end("FAILED")`` (on_train_end is not called then). A run that ends before ``max_steps`` (SIGTERM
    with checkpointing, or a callback stopping training) ends KILLED, not FINISHED, unless
    ``stopped_early()`` says early stopping ended it.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        params: Mapping[str, Any] | Any = (),
        artifact_dir: str | Path = "",
        stopped_early: Callable[[], bool] = lambda: False,
    ):
        self.stopped_early = stopped_early
        self.sinks = list(sinks)
        self.params = flatten_params(params)
        self.artifact_dir = artifact_dir
        self.summary = TrackingSummary()
        self.counter = TokenCounter()
        self._hook = None
        self._running = False  # between train begin and end()
        self._started: list[Sink] = []
        self._window_start = 0.0
        self._window_tokens = 0
        self._window_non_pad = 0
        self._busy_s = 0.0  # seconds of training, time spent in sinks excluded

    # -- counting ---------------------------------------------------------------------------------------
    def _count(self, module, args, kwargs) -> None:
        if module.training:  # evaluation forwards are not training throughput
            self.counter.add(kwargs if "input_ids" in kwargs or not args else {"input_ids": args[0]})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._running = True
        if model is None:
            log.warning("TrackingCallback: no model given at train begin; tokens will not be counted")
        else:
            self._hook = model.register_forward_pre_hook(self._count, with_kwargs=True)
        if state.is_world_process_zero:
            for sink in self.sinks:
                run_id = sink.start(self.params)
                self._started.append(sink)
                self.summary.run_id = self.summary.run_id or run_id  # the first sink's: MLflow's
        self._window_start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        metrics = _numeric(logs)
        if "eval_loss" in metrics:
            self.summary.eval_history.append((state.global_step, metrics["eval_loss"]))
        if "loss" in metrics:  # a training-step log closes the window (eval and summary logs do not)
            self.summary.loss_history.append((state.global_step, metrics["loss"]))
            seconds = time.perf_counter() - self._window_start
            self._busy_s += seconds
            tokens, non_pad = self.counter.tokens, self.counter.non_pad_tokens
            window_tokens, window_non_pad = tokens - self._window_tokens, non_pad - self._window_non_pad
            if seconds > 0:
                metrics["tokens_per_s"] = window_non_pad / seconds
            if tokens:
                metrics["padding_efficiency"] = non_pad / tokens
            if window_tokens:
                metrics["padding_efficiency_window"] = window_non_pad / window_tokens
            self._window_tokens, self._window_non_pad = tokens, non_pad
        logging_start = time.perf_counter()
        for sink in self._started:
            sink.log_metrics(metrics, state.global_step)
        if "loss" in metrics:
            self._window_start = time.perf_counter()  # the next window starts after our own logging
        else:  # neither our logging nor a validation pass (its eval_runtime) is training time
            self._window_start += time.perf_counter() - logging_start + metrics.get("eval_runtime", 0.0)

    def on_train_end(self, args, state, control, **kwargs):
        self._fill_summary()
        self._running = False
        if self.summary.loss_history and state.is_world_process_zero:
            png = loss_curve_png(
                self.summary.loss_history,
                Path(self.artifact_dir or args.output_dir) / LOSS_CURVE,
                self.summary.eval_history,
            )
            self.summary.png_path = str(png)
            for sink in self._started:
                sink.log_artifact(png)
        self.end("FINISHED" if state.global_step >= state.max_steps or self.stopped_early() else "KILLED")

    def _fill_summary(self) -> None:
        """Totals so far; closes the open window (the time since the last training-step log)."""
        self._busy_s += time.perf_counter() - self._window_start
        self._window_start = time.perf_counter()
        s = self.summary
        s.tokens, s.non_pad_tokens = self.counter.tokens, self.counter.non_pad_tokens
        s.padding_efficiency = s.non_pad_tokens / s.tokens if s.tokens else 0.0
        s.tokens_per_s = s.non_pad_tokens / self._busy_s if self._busy_s > 0 else 0.0

    def end(self, status: str = "FAILED") -> TrackingSummary:
        """Stop counting and end every started run with ``status`` (FINISHED, FAILED or KILLED). Idempotent."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._running:  # training raised: on_train_end did not fill the summary
            self._fill_summary()
        self._running = False
        started, self._started = self._started, []
        for sink in started:
            sink.end(status)
        return self.summary
