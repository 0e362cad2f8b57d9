"""KFP components of the evaluate stage: the candidate and every baseline, scored the same way.

* ``evaluate_op``: a trained Model artifact (the candidate);
* ``evaluate_base_op``: the untrained base model (a locator);
* ``evaluate_champion_op``: the registry's current ``champion`` (skipped, saying so, when there is none);
* ``retrieval_baseline_op``: the nearest training example's answer (components/evaluate/retrieval.py);
* ``fetch_model_op``: the model an evaluate-only run scores, from a URI (components/evaluate/fetch.py).

Separate components instead of an optional artifact input, which kfp.local rejects
(kubeflow/pipelines#13061). All call core.evaluate_to_outputs with the same eval rows, template, task
scorer and decoding; the settings each used are recorded on its predictions so the gate can check them.
"""

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE, TRAINER_IMAGE, component


@component(TRAINER_IMAGE)
def evaluate_op(
    model: Input[Model],
    eval_data: Input[Dataset],
    system_prompt: str,
    task_type: str,
    output_schema: str,
    labels: str,
    decoding: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    config_hash: str,
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    classification: Output[ClassificationMetrics],
):
    """Evaluate a trained model on the eval split: batched generation, task metrics.

    Args:
        model: the trained Model artifact (full weights or adapter).
        eval_data: canonical held-out rows.
        system_prompt: system message rendered before every prompt (same as in training).
        task_type: structured, classification or generation.
        output_schema: the JSON Schema of a structured task, as JSON text ("null" otherwise).
        labels: the label set of a classification task, as a JSON list ("[]" otherwise).
        decoding: free, constrained (output held to the schema or label set) or both (side by side).
        max_new_tokens: generation budget per example, in tokens.
        batch_size: prompts generated together.
        max_examples: evaluate at most this many rows; -1 = all.
        config_hash: sha256 of the validated config, recorded as provenance.
        metrics: the task's metrics (validity and match families; with both, free/ and constrained/ too).
        predictions: one row per example with the answer and its per-example scores; settings in metadata.
        classification: the confusion matrix (classification tasks; empty otherwise).
    """
    from components.evaluate.core import evaluate_to_outputs

    evaluate_to_outputs(
        model.path,
        eval_data,
        system_prompt,
        (task_type, output_schema, labels),
        decoding,
        max_new_tokens,
        batch_size,
        max_examples,
        config_hash,
        metrics,
        predictions,
        classification,
        label="candidate",
        upstream={"model": model.metadata.get("sha256", "")},
    )


@component(TRAINER_IMAGE)
def evaluate_base_op(
    base_model: str,
    eval_data: Input[Dataset],
    system_prompt: str,
    task_type: str,
    output_schema: str,
    labels: str,
    decoding: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    config_hash: str,
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    classification: Output[ClassificationMetrics],
):
    """Evaluate the untrained base model exactly as the candidate is evaluated: a baseline.

    Args:
        base_model: tiny://<example>, a hub id, a local folder or a gs:// folder.
        eval_data: canonical held-out rows.
        system_prompt: system message rendered before every prompt.
        task_type: structured, classification or generation.
        output_schema: the JSON Schema of a structured task, as JSON text ("null" otherwise).
        labels: the label set of a classification task, as a JSON list ("[]" otherwise).
        decoding: free, constrained or both, as for the candidate.
        max_new_tokens: generation budget per example, in tokens.
        batch_size: prompts generated together.
        max_examples: evaluate at most this many rows; -1 = all.
        config_hash: sha256 of the validated config, recorded as provenance.
        metrics: the same metrics as the candidate's.
        predictions: one row per example with the answer and its per-example scores.
        classification: the confusion matrix (classification tasks; empty otherwise).
    """
    from components.evaluate.core import evaluate_to_outputs

    evaluate_to_outputs(
        base_model,
        eval_data,
        system_prompt,
        (task_type, output_schema, labels),
        decoding,
        max_new_tokens,
        batch_size,
        max_examples,
        config_hash,
        metrics,
        predictions,
        classification,
        label=f"base:{base_model}",
        upstream={"base_model": base_model},
    )


@component(TRAINER_IMAGE)
def evaluate_champion_op(
    model_name: str,
    registry: str,
    eval_data: Input[Dataset],
    system_prompt: str,
    task_type: str,
    output_schema: str,
    labels: str,
    decoding: str,
    max_new_tokens: int,
    batch_size: int,
    max_examples: int,
    config_hash: str,
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    classification: Output[ClassificationMetrics],
):
    """Evaluate the registry's current champion of ``model_name`` like the candidate; when no champion
    exists yet, the metrics say ``available = 0`` and the gate skips rules against it.

    Args:
        model_name: registered model name.
        registry: JSON {backend: mlflow|vertex, ...}: the registry holding the champion.
        eval_data: canonical held-out rows.
        system_prompt: system message rendered before every prompt.
        task_type: structured, classification or generation.
        output_schema: the JSON Schema of a structured task, as JSON text ("null" otherwise).
        labels: the label set of a classification task, as a JSON list ("[]" otherwise).
        decoding: free, constrained or both, as for the candidate.
        max_new_tokens: generation budget per example, in tokens.
        batch_size: prompts generated together.
        max_examples: evaluate at most this many rows; -1 = all.
        config_hash: sha256 of the validated config, recorded as provenance.
        metrics: the same metrics as the candidate's, plus available (1 or 0).
        predictions: one row per example (none without a champion); its model version in metadata.
        classification: the confusion matrix (classification tasks; empty otherwise).
    """
    from components.evaluate.core import champion, evaluate_to_outputs

    with champion(model_name, registry, metrics, predictions) as found:
        if found is None:
            return
        uri, local = found
        evaluate_to_outputs(
            str(local),
            eval_data,
            system_prompt,
            (task_type, output_schema, labels),
            decoding,
            max_new_tokens,
            batch_size,
            max_examples,
            config_hash,
            metrics,
            predictions,
            classification,
            label=f"champion:{uri}",
            upstream={"model": uri},
        )


@component(CPU_IMAGE)
def retrieval_baseline_op(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    system_prompt: str,
    task_type: str,
    output_schema: str,
    labels: str,
    max_examples: int,
    config_hash: str,
    metrics: Output[Metrics],
    predictions: Output[Dataset],
    classification: Output[ClassificationMetrics],
):
    """The retrieval baseline: each eval prompt gets the answer of the training prompt it overlaps most.

    Args:
        train_data: canonical training rows (the answers to retrieve).
        eval_data: canonical held-out rows.
        system_prompt: recorded only (retrieval reads no prompt template).
        task_type: structured, classification or generation.
        output_schema: the JSON Schema of a structured task, as JSON text ("null" otherwise).
        labels: the label set of a classification task, as a JSON list ("[]" otherwise).
        max_examples: evaluate at most this many rows; -1 = all.
        config_hash: sha256 of the validated config, recorded as provenance.
        metrics: the same metrics as the candidate's.
        predictions: one row per example with the retrieved answer and its per-example scores.
        classification: the confusion matrix (classification tasks; empty otherwise).
    """
    from components.common.scoring import TaskSpec
    from components.evaluate.core import record
    from components.evaluate.retrieval import evaluate_retrieval

    result = evaluate_retrieval(
        train_data.path,
        eval_data.path,
        system_prompt,
        TaskSpec.from_parts(task_type, output_schema, labels),
        predictions.path,
        max_examples=max_examples,
    )
    upstream = {
        "train_data": train_data.metadata.get("sha256", ""),
        "eval_data": eval_data.metadata.get("sha256", ""),
    }
    record(
        result,
        metrics,
        predictions,
        model_label="retrieval",
        config_hash=config_hash,
        upstream=upstream,
        classification=classification,
    )


@component(CPU_IMAGE)
def fetch_model_op(model_uri: str, registry: str, config_hash: str, model: Output[Model]):
    """Copy the model to evaluate into a Model artifact, from a registry version, gs:// or a local folder.

    Args:
        model_uri: models:/NAME/VERSION or models:/NAME@ALIAS (a registry version), a gs:// folder, or a local folder.
        registry: JSON {backend: mlflow|vertex, ...}: the registry a models:/ URI refers to.
        config_hash: sha256 of the validated config, recorded as provenance.
        model: the model folder, with the URI it came from and the version it resolved to in metadata.
    """
    from components.common.provenance import stamp
    from components.evaluate.fetch import fetch_model

    model.metadata.update(fetch_model(model_uri, registry, model.path))
    stamp(model.metadata, model.path, config_hash=config_hash, upstream={"model_uri": model_uri})
