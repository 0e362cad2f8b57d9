# Optional (create_gke_cluster): a private GKE cluster to run a self-hosted Kubeflow Pipelines, with a
# CPU pool for KFP itself and a GPU pool that scales to zero. GPU nodes carry the taint
# nvidia.com/gpu=present:NoSchedule, so only pods that ask for a GPU (and tolerate it, which GKE adds to
# pods requesting nvidia.com/gpu) land there, and the label slmforge/pool=gpu for node selectors.

resource "google_compute_network" "kfp" {
  count                   = var.create_gke_cluster ? 1 : 0
  project                 = var.project_id
  name                    = "${var.name}-kfp"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "kfp" {
  count                    = var.create_gke_cluster ? 1 : 0
  project                  = var.project_id
  name                     = "${var.name}-kfp"
  region                   = var.region
  network                  = google_compute_network.kfp[0].id
  ip_cidr_range            = "10.10.0.0/20"
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.20.0.0/14"
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.30.0.0/20"
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Nothing reaches the nodes from outside but what GKE opens for its control plane (its own rules, at
# priority 1000); this rule makes the default explicit and logs what it refuses.
resource "google_compute_firewall" "kfp_deny_ingress" {
  count     = var.create_gke_cluster ? 1 : 0
  project   = var.project_id
  name      = "${var.name}-kfp-deny-ingress"
  network   = google_compute_network.kfp[0].id
  direction = "INGRESS"
  priority  = 65000

  deny {
    protocol = "all"
  }
  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Private nodes have no public address: Cloud NAT lets them pull KFP's public images.
resource "google_compute_router" "kfp" {
  count   = var.create_gke_cluster ? 1 : 0
  project = var.project_id
  name    = "${var.name}-kfp"
  region  = var.region
  network = google_compute_network.kfp[0].id
}

resource "google_compute_router_nat" "kfp" {
  count                              = var.create_gke_cluster ? 1 : 0
  project                            = var.project_id
  name                               = "${var.name}-kfp"
  router                             = google_compute_router.kfp[0].name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Nodes run as their own account with only logging, monitoring and image pulls (not the default
# Compute Engine account, which has Editor). Pipelines reach Google APIs through Workload Identity.
resource "google_service_account" "gke_nodes" {
  count        = var.create_gke_cluster ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name}-gke-nodes"
  display_name = "slmforge GKE nodes"
}

resource "google_project_iam_member" "gke_nodes" {
  for_each = var.create_gke_cluster ? toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ]) : toset([])
  project = var.project_id
  role    = each.value
  member  = google_service_account.gke_nodes[0].member
}

resource "google_artifact_registry_repository_iam_member" "gke_nodes_images" {
  count      = var.create_gke_cluster ? 1 : 0
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.gke_nodes[0].member
}

resource "google_container_cluster" "kfp" {
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Workspace/Cloud Identity domain this module cannot assume; RBAC is bound to users and service accounts.
  #checkov:skip=CKV_GCP_66:Binary Authorization needs an attestor pipeline outside this module; images come only from the immutable-tag Artifact Registry repository.
  count    = var.create_gke_cluster ? 1 : 0
  project  = var.project_id
  name     = "${var.name}-kfp"
  location = var.region

  network    = google_compute_network.kfp[0].id
  subnetwork = google_compute_subnetwork.kfp[0].id

  # Node pools are managed below; the default pool is removed at creation.
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection         = true
  resource_labels             = local.labels
  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.gke_master_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.gke_authorized_networks
      content {
        cidr_block   = cidr_blocks.key
        display_name = cidr_blocks.value
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  network_policy {
    enabled  = true
    provider = "CALICO"
  }

  addons_config {
    network_policy_config {
      disabled = false
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  release_channel {
    channel = "REGULAR"
  }

  logging_service    = "logging.googleapis.com/kubernetes"
  monitoring_service = "monitoring.googleapis.com/kubernetes"

  # The default pool exists only until remove_default_node_pool deletes it; it is hardened all the same.
  node_config {
    service_account = google_service_account.gke_nodes[0].email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  depends_on = [google_project_service.apis, google_compute_router_nat.kfp]
}

# The node pools: Kubeflow Pipelines' own services (API server, UI, metadata, the argo controller) and CPU
# steps on cpu; training and evaluation steps on gpu, which scales from 0, with the NVIDIA driver installed by
# GKE (gpu_driver_installation_config). Both run as gke_nodes, hardened as the cluster's default pool above.
locals {
  node_pools = {
    cpu = {
      machine_type = "e2-standard-4"
      min_nodes    = 1
      max_nodes    = 3
      disk_size_gb = null # GKE's default
      accelerator  = null
      taints       = []
    }
    gpu = {
      machine_type = var.gpu_machine_type
      min_nodes    = 0
      max_nodes    = var.gpu_max_nodes
      disk_size_gb = 200 # the trainer image (CUDA torch, Unsloth) and model checkpoints
      accelerator  = { type = var.gpu_accelerator_type, count = var.gpu_accelerator_count }
      taints       = [{ key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }]
    }
  }
}

resource "google_container_node_pool" "kfp" {
  for_each = { for name, pool in local.node_pools : name => pool if var.create_gke_cluster }
  project  = var.project_id
  name     = each.key
  location = var.region
  cluster  = google_container_cluster.kfp[0].name

  autoscaling {
    min_node_count = each.value.min_nodes
    max_node_count = each.value.max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = each.value.machine_type
    disk_size_gb    = each.value.disk_size_gb
    labels          = { "slmforge/pool" = each.key }
    service_account = google_service_account.gke_nodes[0].email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }

    dynamic "guest_accelerator" {
      for_each = each.value.accelerator[*]
      content {
        type  = guest_accelerator.value.type
        count = guest_accelerator.value.count
        gpu_driver_installation_config {
          gpu_driver_version = "LATEST"
        }
      }
    }

    dynamic "taint" {
      for_each = each.value.taints
      content {
        key    = taint.value.key
        value  = taint.value.value
        effect = taint.value.effect
      }
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}
