# Four identities, each with only what its job needs:
#   pipeline: the PipelineJobs' runtime identity (every step runs as it);
#   deployer: GitHub Actions on the main branch: push images, upload templates, submit PipelineJobs,
#             deploy versions to endpoints and check them for drift (`slmforge deploy`, `drift-check`);
#   promoter: GitHub Actions in the protected environment: read a run's gate result, move model aliases;
#   serving:  the identity deployed models run as on Vertex AI endpoints: reads their weights, nothing else.
# What each may do is a table below, one row a grant (its account, a key of service_accounts), and one
# resource per table. A row's key is the name its resource had before the tables: moved.tf carries state.

locals {
  service_accounts = {
    pipeline = { display_name = "slmforge pipeline runtime", description = "Runs the slmforge Vertex AI PipelineJobs and their custom jobs." }
    deployer = { display_name = "slmforge CI deployer", description = "GitHub Actions on ${var.github_repository}: images, templates, pipeline submission." }
    promoter = { display_name = "slmforge promotion", description = "GitHub Actions environment ${var.github_environment}: moves model aliases after a passed gate." }
    serving  = { display_name = "slmforge model serving", description = "Runs deployed models on Vertex AI endpoints; reads registered weights only." }
  }

  # On the project. Pipeline steps create Vertex custom jobs (multi-node training), write Experiments and
  # register models: Vertex has no narrower predefined role for a pipeline's runtime identity than
  # aiplatform.user. The promoter holds only its custom role (below).
  project_grants = {
    pipeline_vertex = { account = "pipeline", role = "roles/aiplatform.user" }
    pipeline_logs   = { account = "pipeline", role = "roles/logging.logWriter" }
    deployer_vertex = { account = "deployer", role = "roles/aiplatform.user" }
    promoter        = { account = "promoter", role = google_project_iam_custom_role.promoter.id }
  }

  # In the pipeline bucket: the runtime account owns its objects; the CI accounts are each held by a
  # condition to the objects their job touches (bucket_conditions).
  bucket_grants = {
    pipeline_bucket            = { account = "pipeline", role = "roles/storage.objectAdmin", condition = null }
    deployer_reads_staged_data = { account = "deployer", role = "roles/storage.objectViewer", condition = local.bucket_conditions.staged_data }
    deployer_stages_data       = { account = "deployer", role = "roles/storage.objectCreator", condition = local.bucket_conditions.staged_data }
    promoter_reads_staging     = { account = "promoter", role = "roles/storage.objectViewer", condition = local.bucket_conditions.registry_staging }
    promoter_writes_audit_log  = { account = "promoter", role = "roles/storage.objectUser", condition = local.bucket_conditions.registry_audit_logs }
    serving_reads_weights      = { account = "serving", role = "roles/storage.objectViewer", condition = local.bucket_conditions.registry_staging }
    deployer_deployment_state  = { account = "deployer", role = "roles/storage.objectUser", condition = local.bucket_conditions.deployment_state }
    deployer_reads_versions    = { account = "deployer", role = "roles/storage.objectViewer", condition = local.bucket_conditions.registry_staging }
    deployer_reads_eval_output = { account = "deployer", role = "roles/storage.objectViewer", condition = local.bucket_conditions.pipeline_outputs }
  }

  # `submit` copies local data files to <pipeline_root>/slmforge-data/<content hash>/ (pipelines/vertex.py):
  # it checks whether each object exists and creates it; it never overwrites or deletes.
  # With registry.backend: vertex, a version's exact tags (gate verdict included) live in
  # slmforge_tags.json beside its weights, and every alias move is appended to <model>/audit.jsonl
  # (components/register/vertex_registry.py). So: read under the staging prefix, and write that one log
  # (appending rewrites the object, which needs create and delete) — nothing else in the bucket.
  bucket_objects      = "projects/_/buckets/${google_storage_bucket.pipelines.name}/objects"
  staged_data_objects = "${local.bucket_objects}/${local.pipeline_root_prefix}/slmforge-data/"
  staging_objects     = "${local.bucket_objects}/${var.registry_staging_prefix}/"
  # `slmforge deploy` records each deployment (gold set, smoke check, history) under deployments/
  # (deploy.state), which the scheduled drift check reads and appends to; it reads a version's tags under
  # the registry staging prefix and its eval predictions (the gold set) under the pipeline root.
  deployment_objects = "${local.bucket_objects}/deployments/"
  bucket_conditions = {
    staged_data         = { title = "staged data only", expression = "resource.name.startsWith(\"${local.staged_data_objects}\")" }
    registry_staging    = { title = "registry staging only", expression = "resource.name.startsWith(\"${local.staging_objects}\")" }
    registry_audit_logs = { title = "registry audit logs only", expression = "resource.name.startsWith(\"${local.staging_objects}\") && resource.name.endsWith(\"/audit.jsonl\")" }
    deployment_state    = { title = "deployment records only", expression = "resource.name.startsWith(\"${local.deployment_objects}\")" }
    pipeline_outputs    = { title = "pipeline outputs only", expression = "resource.name.startsWith(\"${local.bucket_objects}/${local.pipeline_root_prefix}/\")" }
  }

  # On the Artifact Registry repositories: the runtime pulls step images, CI pushes images and templates.
  repository_grants = {
    pipeline_images    = { account = "pipeline", repository = google_artifact_registry_repository.images, role = "roles/artifactregistry.reader" }
    deployer_images    = { account = "deployer", repository = google_artifact_registry_repository.images, role = "roles/artifactregistry.writer" }
    deployer_templates = { account = "deployer", repository = google_artifact_registry_repository.templates, role = "roles/artifactregistry.writer" }
  }

  # Who may act as the pipeline account (row value: the account that may): the multi-node launcher step
  # starts its custom job's replicas as this same account, and submitting a PipelineJob that runs as the
  # pipeline account needs actAs on that account only.
  pipeline_account_users = {
    pipeline_acts_as_itself   = "pipeline"
    deployer_acts_as_pipeline = "deployer"
  }

  # Who may act as the serving account: deploying a version whose deployed model runs as it needs actAs on
  # that account only — `slmforge deploy` (deployer) and the pipeline's deploy step (deploy.after_register).
  serving_account_users = {
    deployer_acts_as_serving = "deployer"
    pipeline_acts_as_serving = "pipeline"
  }
}

resource "google_service_account" "slmforge" {
  for_each     = local.service_accounts
  project      = var.project_id
  account_id   = "${var.name}-${each.key}"
  display_name = each.value.display_name
  description  = each.value.description
}

resource "google_project_iam_member" "grants" {
  for_each = local.project_grants
  project  = var.project_id
  role     = each.value.role
  member   = google_service_account.slmforge[each.value.account].member
}

resource "google_storage_bucket_iam_member" "grants" {
  for_each = local.bucket_grants
  bucket   = google_storage_bucket.pipelines.name
  role     = each.value.role
  member   = google_service_account.slmforge[each.value.account].member

  dynamic "condition" {
    for_each = each.value.condition[*]
    content {
      title      = condition.value.title
      expression = condition.value.expression
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "grants" {
  for_each   = local.repository_grants
  project    = var.project_id
  location   = each.value.repository.location
  repository = each.value.repository.name
  role       = each.value.role
  member     = google_service_account.slmforge[each.value.account].member
}

resource "google_service_account_iam_member" "serving_users" {
  for_each           = local.serving_account_users
  service_account_id = google_service_account.slmforge["serving"].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.slmforge[each.value].member
}

# Self-hosted Kubeflow Pipelines (gke.tf, kfp/): the pods of every run use the Kubernetes service account
# kubeflow/pipeline-runner, which Workload Identity maps to the pipeline account (kfp/ annotates it).
resource "google_service_account_iam_member" "pipeline_workload_identity" {
  count              = var.create_gke_cluster ? 1 : 0
  service_account_id = google_service_account.slmforge["pipeline"].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[kubeflow/pipeline-runner]"
}

resource "google_service_account_iam_member" "pipeline_users" {
  for_each           = local.pipeline_account_users
  service_account_id = google_service_account.slmforge["pipeline"].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.slmforge[each.value].member
}

# --- promotion -------------------------------------------------------------------------------------------
# Only what `slmforge promote` / `slmforge rollback` do: read model versions and their recorded gate
# verdict (labels), read the pipeline run that produced them, and move version aliases (models.update;
# Vertex's mergeVersionAliases is checked against it). No create, delete, deploy or upload.
resource "google_project_iam_custom_role" "promoter" {
  project     = var.project_id
  role_id     = "${replace(var.name, "-", "_")}_promoter"
  title       = "slmforge promoter"
  description = "Read model versions and pipeline runs; move model version aliases."
  permissions = [
    "aiplatform.models.get",
    "aiplatform.models.list",
    "aiplatform.models.update",
    "aiplatform.pipelineJobs.get",
    "aiplatform.pipelineJobs.list",
    "aiplatform.metadataStores.get",
    "aiplatform.artifacts.get",
    "aiplatform.artifacts.list",
    "aiplatform.executions.get",
    "aiplatform.executions.list",
  ]
}
