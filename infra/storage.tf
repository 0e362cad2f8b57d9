# The pipeline root (every run's artifacts) and the staging location of registered models.
resource "google_storage_bucket" "pipelines" {
  #checkov:skip=CKV_GCP_62:Reads and writes are recorded by Cloud Audit Logs (Data Access logs for storage.googleapis.com), not by legacy usage logs in a second bucket.
  name                        = local.bucket_name
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_object_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}
