# The values the GitHub workflows need (README: "GitHub Actions"), and the config's vertex section.

output "workload_identity_provider" {
  description = "GitHub variable GCP_WORKLOAD_IDENTITY_PROVIDER."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "deployer_service_account" {
  description = "GitHub variable GCP_DEPLOYER_SERVICE_ACCOUNT."
  value       = google_service_account.slmforge["deployer"].email
}

output "promoter_service_account" {
  description = "GitHub variable GCP_PROMOTER_SERVICE_ACCOUNT (used only in the protected environment)."
  value       = google_service_account.slmforge["promoter"].email
}

output "pipeline_service_account" {
  description = "The config's vertex.service_account."
  value       = google_service_account.slmforge["pipeline"].email
}

output "serving_service_account" {
  description = "The config's deploy.service_account: the identity deployed models run as."
  value       = google_service_account.slmforge["serving"].email
}

output "deployment_state" {
  description = "The config's deploy.state: where deployments and their gold sets are recorded."
  value       = "${google_storage_bucket.pipelines.url}/deployments"
}

output "pipeline_root" {
  description = "The config's vertex.pipeline_root."
  value       = "${google_storage_bucket.pipelines.url}/${local.pipeline_root_prefix}"
}

output "image_repo" {
  description = "GitHub variable GCP_IMAGE_REPO; python compile.py --image-repo."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "template_repo" {
  description = "GitHub variable GCP_TEMPLATE_REPO: where CI uploads compiled templates."
  value       = "https://${var.region}-kfp.pkg.dev/${var.project_id}/${google_artifact_registry_repository.templates.repository_id}"
}

output "gke_cluster" {
  description = "Name of the self-hosted KFP cluster, when create_gke_cluster."
  value       = var.create_gke_cluster ? google_container_cluster.kfp[0].name : null
}

output "kfp_params_env" {
  description = "infra/kfp/params.env for the Kubeflow Pipelines install: artifacts under the pipeline root, runs as the pipeline account."
  value       = var.create_gke_cluster ? "defaultPipelineRoot=${google_storage_bucket.pipelines.url}/${local.pipeline_root_prefix}\npipelineServiceAccount=${google_service_account.slmforge["pipeline"].email}\n" : null
}

output "kfp_install" {
  description = "The commands that install Kubeflow Pipelines (pinned, infra/kfp/) on the cluster, from infra/."
  value = var.create_gke_cluster ? join("\n", [
    "gcloud container clusters get-credentials ${google_container_cluster.kfp[0].name} --region ${var.region} --project ${var.project_id}",
    "terraform output -raw kfp_params_env > kfp/params.env",
    "kubectl apply -k 'github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=2.17.0'",
    "kubectl wait --for condition=established --timeout=60s crd/applications.app.k8s.io",
    "kubectl apply -k kfp/",
  ]) : null
}

output "kfp_api" {
  description = "How to reach the KFP API of the private cluster: a port-forward from a machine with cluster access, then submit --kfp-host."
  value       = var.create_gke_cluster ? "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80; then: submit CONFIG --kfp-host http://localhost:8080" : null
}
