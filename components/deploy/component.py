"""KFP component of the deploy step (logic in actions.py): the finetune pipeline's optional last step."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def deploy_op(
    registered: Input[Model],
    predictions: Input[Dataset],
    after_register: bool,
    target: str,
    endpoint: str,
    accelerator_type: str,
    accelerator_count: int,
    service_account: str,
    min_replicas: int,
    max_replicas: int,
    canary_percent: int,
    gold_rows: int,
    parity_tolerance: float,
    drift_margin: float,
    timeout_s: float,
    state: str,
    task_type: str,
    output_schema: str,
    labels: str,
    system_prompt: str,
    decoding: str,
    max_new_tokens: int,
    gate_rules: str,
    bootstrap: str,
    registry: str,
    model_name: str,
    deployment: Output[Artifact],
) -> str:
    """Deploy the registered version to a Vertex AI endpoint as a canary next to the version serving now,
    smoke-check the canary's own answers on a gold set of the export's eval predictions, and roll it back
    (failing the step) when the check is red. `slmforge deploy promote` gives it all the traffic.

    Args:
        registered: register's record of the version (metadata carries model_uri).
        predictions: the exported model's eval predictions: the gold set and the offline answers.
        after_register: deploy.after_register (the step runs only when it is on).
        target: deploy.target (vertex in a pipeline).
        endpoint: the endpoint's display name (created when missing; default: the model name).
        accelerator_type: the serving GPU.
        accelerator_count: GPUs per replica.
        service_account: the identity the deployed model runs as.
        min_replicas: replicas kept up.
        max_replicas: replicas autoscaling may add.
        canary_percent: share of traffic the new version gets.
        gold_rows: rows of the eval predictions kept as the gold set.
        parity_tolerance: share of gold rows whose served answer may differ from the offline one.
        drift_margin: the drift check's margin, recorded for `slmforge drift-check`.
        timeout_s: seconds per request to the endpoint.
        state: gs:// prefix the deployment is recorded under (gold set, smoke check, history).
        task_type: structured, classification or generation.
        output_schema: the task's JSON Schema, as JSON text.
        labels: JSON list of a classification task's labels.
        system_prompt: the system prompt of training and evaluation.
        decoding: offline evaluation's decoding (the same constraint is asked of the server).
        max_new_tokens: generation budget per request.
        gate_rules: JSON list of the gate's rules (the smoke check's thresholds).
        bootstrap: JSON {resamples, seed, confidence} of the gate's paired bootstrap.
        registry: JSON {backend: vertex, project, region, ...}: where the version is registered.
        model_name: registered model name.
        deployment: the deployment record (endpoint, split, smoke check, history).

    Returns:
        The deployment's status: canary.
    """
    from components.deploy.actions import DeployOptions, deploy_step

    opts = DeployOptions.from_inputs(
        after_register=after_register,
        target=target,
        endpoint=endpoint,
        accelerator_type=accelerator_type,
        accelerator_count=accelerator_count,
        service_account=service_account,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        canary_percent=canary_percent,
        gold_rows=gold_rows,
        parity_tolerance=parity_tolerance,
        drift_margin=drift_margin,
        timeout_s=timeout_s,
        state=state,
        task_type=task_type,
        output_schema=output_schema,
        labels=labels,
        system_prompt=system_prompt,
        decoding=decoding,
        max_new_tokens=max_new_tokens,
        gate_rules=gate_rules,
        bootstrap=bootstrap,
        registry=registry,
        model_name=model_name,
    )
    status = deploy_step(registered.metadata["model_uri"], predictions.path, opts, deployment.path)
    deployment.metadata.update({"status": status, "model_uri": registered.metadata["model_uri"]})
    return status
