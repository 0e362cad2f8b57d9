variable "project_id" {
  description = "The Google Cloud project that runs the pipelines (it must exist, with billing)."
  type        = string
}

variable "region" {
  description = "Region of Vertex AI Pipelines, the bucket and the Artifact Registry repositories."
  type        = string
  default     = "us-central1"
}

variable "github_repository" {
  description = "The only GitHub repository allowed to authenticate, as OWNER/NAME (the token's repository claim)."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be OWNER/NAME, e.g. acme/slmforge."
  }
}

variable "github_ref" {
  description = "The only git ref whose workflows may authenticate (the token's ref claim)."
  type        = string
  default     = "refs/heads/main"
}

variable "github_environment" {
  description = "The GitHub environment (protected, with required reviewers) whose jobs may act as the promotion account."
  type        = string
  default     = "production"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "slmforge"
}

variable "bucket_name" {
  description = "Name of the pipeline bucket (pipeline root, staged models); empty = PROJECT-NAME-pipelines."
  type        = string
  default     = ""
}

variable "registry_staging_prefix" {
  description = "Where in the bucket registry.backend vertex stages model versions (the config's registry.staging_uri, default <pipeline_root>/models)."
  type        = string
  default     = "pipeline-root/models"
}

variable "noncurrent_object_days" {
  description = "Days a replaced or deleted object version of the pipeline bucket is kept before deletion."
  type        = number
  default     = 30
}

variable "create_gke_cluster" {
  description = "Also create a GKE cluster with a GPU node pool, to run a self-hosted Kubeflow Pipelines."
  type        = bool
  default     = false
}

variable "gke_master_cidr" {
  description = "The /28 of the GKE control plane's private endpoint."
  type        = string
  default     = "172.16.0.0/28"
}

variable "gke_authorized_networks" {
  description = "CIDR blocks allowed to reach the GKE control plane (kubectl), as {cidr = name}."
  type        = map(string)
  default     = {}
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU node pool (g2-standard-8 carries one L4)."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_accelerator_type" {
  description = "GPU of the GPU node pool, as GKE names it (nvidia-l4, nvidia-tesla-a100, nvidia-h100-80gb)."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_accelerator_count" {
  description = "GPUs per node of the GPU node pool."
  type        = number
  default     = 1
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU node pool's autoscaler (it scales to 0 when no training runs)."
  type        = number
  default     = 2
}
