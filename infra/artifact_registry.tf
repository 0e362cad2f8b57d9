# Container images of the pipeline steps (images/cpu, images/trainer), tagged by git SHA.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption keys; the images hold code and public packages, no data or secrets.
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  format        = "DOCKER"
  description   = "slmforge step images (cpu, trainer), tagged by git SHA"
  labels        = local.labels

  docker_config {
    immutable_tags = true
  }

  depends_on = [google_project_service.apis]
}

# Compiled pipeline templates (build/pipelines/*.yaml), uploaded by CI, versioned and tagged by git SHA.
resource "google_artifact_registry_repository" "templates" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption keys; the templates are compiled YAML from this repository.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name}-templates"
  format        = "KFP"
  description   = "slmforge KFP pipeline templates"
  labels        = local.labels

  depends_on = [google_project_service.apis]
}
