output "webserver_urls" {
  description = "IAP-protected URLs of the Dagster UI (and of the read-only one, if enabled)."
  value       = { for name, service in google_cloud_run_v2_service.webserver : name => service.uri }
}

output "service_account" {
  description = "The identity every container runs as."
  value       = google_service_account.pipelines.email
}

output "compute_log_bucket" {
  value = google_storage_bucket.compute_logs.name
}

output "migrate_command" {
  description = "Run before rolling out a new image."
  value       = "gcloud run jobs execute ${google_cloud_run_v2_job.migrate.name} --region ${var.region} --project ${var.project_id} --wait"
}

output "alert_policies" {
  description = "The alert policies, by display name (runbook: README.md, section \"Runbook\")."
  value = {
    for policy in [
      google_monitoring_alert_policy.dead_letter,
      google_monitoring_alert_policy.resolve_taxa_stalled,
      google_monitoring_alert_policy.daemon_stopped_ticking,
      google_monitoring_alert_policy.item_failures,
    ] : policy.display_name => policy.name
  }
}
