# Workload Identity Federation for GitHub Actions: no service-account keys. The provider accepts only
# tokens of one repository and one ref; the deployer may be used by any workflow that passes that
# condition, the promoter only by jobs running in the protected GitHub environment (the token's subject is
# then repo:OWNER/NAME:environment:ENV).

locals {
  github_owner               = split("/", var.github_repository)[0]
  github_name                = split("/", var.github_repository)[1]
  github_subject_environment = "repo:${local.github_owner}/${local.github_name}:environment:${var.github_environment}"
}

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = "${var.name}-github"
  display_name              = "GitHub Actions"
  description               = "GitHub Actions of ${var.github_repository}"

  depends_on = [google_project_service.apis]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub OIDC"
  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
  }
  # One repository, one ref, and a subject that is either that ref (plain jobs) or the protected
  # environment (its jobs' subject names the environment instead of the ref): pull requests, other
  # branches, tags and forks are refused here, before any service account binding is consulted.
  attribute_condition = "assertion.repository == '${var.github_repository}' && assertion.ref == '${var.github_ref}' && (assertion.sub == 'repo:${local.github_owner}/${local.github_name}:ref:${var.github_ref}' || assertion.sub == 'repo:${local.github_owner}/${local.github_name}:environment:${var.github_environment}')"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account_iam_member" "deployer_wif" {
  service_account_id = google_service_account.slmforge["deployer"].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}

resource "google_service_account_iam_member" "promoter_wif" {
  service_account_id = google_service_account.slmforge["promoter"].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject/${local.github_subject_environment}"
}
