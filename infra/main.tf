# slmforge on one Google Cloud project: Vertex AI Pipelines, a pipeline bucket, Artifact Registry for
# images and KFP templates, three service accounts (pipeline runtime, CI deployer, promotion) and Workload
# Identity Federation for GitHub Actions. gke.tf adds an optional cluster for a self-hosted KFP.

locals {
  # vertex.pipeline_root is gs://BUCKET/pipeline-root (output pipeline_root)
  pipeline_root_prefix = "pipeline-root"

  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-${var.name}-pipelines"
  labels      = { app = var.name, managed-by = "terraform" }
  apis = concat(
    [
      "aiplatform.googleapis.com",
      "artifactregistry.googleapis.com",
      "cloudresourcemanager.googleapis.com",
      "iam.googleapis.com",
      "iamcredentials.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
      "storage.googleapis.com",
      "sts.googleapis.com",
    ],
    var.create_gke_cluster ? ["compute.googleapis.com", "container.googleapis.com"] : [],
  )
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
