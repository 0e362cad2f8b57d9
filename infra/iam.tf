# Three identities, each with only what its job needs:
#   pipeline: the PipelineJobs' runtime identity (every step runs as it);
#   deployer: GitHub Actions on the main branch: push images, upload templates, submit PipelineJobs;
#   promoter: GitHub Actions in the protected environment: read a run's gate result, move model aliases.

resource "google_service_account" "pipeline" {
  project      = var.project_id
  account_id   = "${var.name}-pipeline"
  display_name = "slmforge pipeline runtime"
  description  = "Runs the slmforge Vertex AI PipelineJobs and their custom jobs."
}

resource "google_service_account" "deployer" {
  project      = var.project_id
  account_id   = "${var.name}-deployer"
  display_name = "slmforge CI deployer"
  description  = "GitHub Actions on ${var.github_repository}: images, templates, pipeline submission."
}

resource "google_service_account" "promoter" {
  project      = var.project_id
  account_id   = "${var.name}-promoter"
  display_name = "slmforge promotion"
  description  = "GitHub Actions environment ${var.github_environment}: moves model aliases after a passed gate."
}

# --- pipeline runtime ------------------------------------------------------------------------------------
# Steps create Vertex custom jobs (multi-node training), write Experiments and register models: Vertex has
# no narrower predefined role for a pipeline's runtime identity than aiplatform.user.
resource "google_project_iam_member" "pipeline_vertex" {
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.pipeline.member
}

resource "google_project_iam_member" "pipeline_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.pipeline.member
}

resource "google_storage_bucket_iam_member" "pipeline_bucket" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.pipeline.member
}

resource "google_artifact_registry_repository_iam_member" "pipeline_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.pipeline.member
}

# The multi-node launcher step starts its custom job's replicas as this same account.
resource "google_service_account_iam_member" "pipeline_acts_as_itself" {
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.pipeline.member
}

# --- CI deployer -----------------------------------------------------------------------------------------
resource "google_project_iam_member" "deployer_vertex" {
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.deployer.member
}

# Submitting a PipelineJob that runs as the pipeline account needs actAs on that account only.
resource "google_service_account_iam_member" "deployer_acts_as_pipeline" {
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer.member
}

resource "google_artifact_registry_repository_iam_member" "deployer_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer.member
}

resource "google_artifact_registry_repository_iam_member" "deployer_templates" {
  project    = var.project_id
  location   = google_artifact_registry_repository.templates.location
  repository = google_artifact_registry_repository.templates.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer.member
}

# `submit` copies local data files to <pipeline_root>/slmforge-data/<content hash>/ (pipelines/vertex.py):
# it checks whether each object exists and creates it; it never overwrites or deletes.
resource "google_storage_bucket_iam_member" "deployer_reads_staged_data" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.deployer.member
  condition {
    title      = "staged data only"
    expression = "resource.name.startsWith(\"${local.staged_data_objects}\")"
  }
}

resource "google_storage_bucket_iam_member" "deployer_stages_data" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.deployer.member
  condition {
    title      = "staged data only"
    expression = "resource.name.startsWith(\"${local.staged_data_objects}\")"
  }
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

resource "google_project_iam_member" "promoter" {
  project = var.project_id
  role    = google_project_iam_custom_role.promoter.id
  member  = google_service_account.promoter.member
}

# With registry.backend: vertex, a version's exact tags (gate verdict included) live in
# slmforge_tags.json beside its weights, and every alias move is appended to <model>/audit.jsonl
# (components/register/vertex_registry.py). So: read under the staging prefix, and write that one log
# (appending rewrites the object, which needs create and delete) — nothing else in the bucket.
locals {
  bucket_objects      = "projects/_/buckets/${google_storage_bucket.pipelines.name}/objects"
  staged_data_objects = "${local.bucket_objects}/${local.pipeline_root_prefix}/slmforge-data/"
  staging_objects     = "${local.bucket_objects}/${var.registry_staging_prefix}/"
}

resource "google_storage_bucket_iam_member" "promoter_reads_staging" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.promoter.member
  condition {
    title      = "registry staging only"
    expression = "resource.name.startsWith(\"${local.staging_objects}\")"
  }
}

resource "google_storage_bucket_iam_member" "promoter_writes_audit_log" {
  bucket = google_storage_bucket.pipelines.name
  role   = "roles/storage.objectUser"
  member = google_service_account.promoter.member
  condition {
    title      = "registry audit logs only"
    expression = "resource.name.startsWith(\"${local.staging_objects}\") && resource.name.endsWith(\"/audit.jsonl\")"
  }
}
