# State moves for configurations applied before iam.tf's grant tables and gke.tf's node_pools: each
# resource that became a row of a for_each resource. Terraform applies them on the next plan; once every
# state in use has been applied with them they can be deleted.

moved {
  from = google_service_account.pipeline
  to   = google_service_account.slmforge["pipeline"]
}

moved {
  from = google_service_account.deployer
  to   = google_service_account.slmforge["deployer"]
}

moved {
  from = google_service_account.promoter
  to   = google_service_account.slmforge["promoter"]
}

moved {
  from = google_project_iam_member.pipeline_vertex
  to   = google_project_iam_member.grants["pipeline_vertex"]
}

moved {
  from = google_project_iam_member.pipeline_logs
  to   = google_project_iam_member.grants["pipeline_logs"]
}

moved {
  from = google_project_iam_member.deployer_vertex
  to   = google_project_iam_member.grants["deployer_vertex"]
}

moved {
  from = google_project_iam_member.promoter
  to   = google_project_iam_member.grants["promoter"]
}

moved {
  from = google_storage_bucket_iam_member.pipeline_bucket
  to   = google_storage_bucket_iam_member.grants["pipeline_bucket"]
}

moved {
  from = google_storage_bucket_iam_member.deployer_reads_staged_data
  to   = google_storage_bucket_iam_member.grants["deployer_reads_staged_data"]
}

moved {
  from = google_storage_bucket_iam_member.deployer_stages_data
  to   = google_storage_bucket_iam_member.grants["deployer_stages_data"]
}

moved {
  from = google_storage_bucket_iam_member.promoter_reads_staging
  to   = google_storage_bucket_iam_member.grants["promoter_reads_staging"]
}

moved {
  from = google_storage_bucket_iam_member.promoter_writes_audit_log
  to   = google_storage_bucket_iam_member.grants["promoter_writes_audit_log"]
}

moved {
  from = google_artifact_registry_repository_iam_member.pipeline_images
  to   = google_artifact_registry_repository_iam_member.grants["pipeline_images"]
}

moved {
  from = google_artifact_registry_repository_iam_member.deployer_images
  to   = google_artifact_registry_repository_iam_member.grants["deployer_images"]
}

moved {
  from = google_artifact_registry_repository_iam_member.deployer_templates
  to   = google_artifact_registry_repository_iam_member.grants["deployer_templates"]
}

moved {
  from = google_service_account_iam_member.pipeline_acts_as_itself
  to   = google_service_account_iam_member.pipeline_users["pipeline_acts_as_itself"]
}

moved {
  from = google_service_account_iam_member.deployer_acts_as_pipeline
  to   = google_service_account_iam_member.pipeline_users["deployer_acts_as_pipeline"]
}

moved {
  from = google_container_node_pool.cpu[0]
  to   = google_container_node_pool.kfp["cpu"]
}

moved {
  from = google_container_node_pool.gpu[0]
  to   = google_container_node_pool.kfp["gpu"]
}

moved {
  from = google_service_account_iam_member.deployer_acts_as_serving
  to   = google_service_account_iam_member.serving_users["deployer_acts_as_serving"]
}
