# Two service accounts. `pipelines` runs the daemon, the webserver and run workers, with only
# what they use: Cloud SQL connections, the jobs' own secrets, the compute-log bucket, and (for
# the Cloud Run launcher) starting run-worker executions. `migrate` alone may read the app's admin
# database URL, so a compromised webserver or run never holds admin credentials.

resource "google_service_account" "pipelines" {
  project      = var.project_id
  account_id   = "observing-pipelines"
  display_name = "observing-pipelines (Dagster webserver, daemon, runs, migrations)"
}

resource "google_service_account" "migrate" {
  project      = var.project_id
  account_id   = "observing-pipelines-migrate"
  display_name = "observing-pipelines migrations (admin database URL)"
}

resource "google_project_iam_member" "cloudsql_client" {
  for_each = {
    pipelines = google_service_account.pipelines.member
    migrate   = google_service_account.migrate.member
  }
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = each.value
}

resource "google_project_iam_member" "log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.pipelines.member
}

resource "google_secret_manager_secret_iam_member" "jobs_db_password" {
  for_each = {
    pipelines = google_service_account.pipelines.member
    migrate   = google_service_account.migrate.member # sets it on the jobs_runtime role
  }
  project   = var.project_id
  secret_id = google_secret_manager_secret.jobs_db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

resource "google_secret_manager_secret_iam_member" "iucn_token" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.iucn_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.pipelines.member
}

resource "google_secret_manager_secret_iam_member" "admin_database_url" {
  project   = var.project_id
  secret_id = var.admin_database_url_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.migrate.member
}

resource "google_project_iam_member" "migrate_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.migrate.member
}

resource "google_storage_bucket_iam_member" "compute_logs" {
  bucket = google_storage_bucket.compute_logs.name
  role   = "roles/storage.objectUser"
  member = google_service_account.pipelines.member
}

# The Cloud Run launcher starts executions of the run-worker job with a per-run command.
resource "google_cloud_run_v2_job_iam_member" "run_worker_developer" {
  count    = var.run_launcher == "cloud_run" ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.run_worker[0].name
  role     = "roles/run.developer"
  member   = google_service_account.pipelines.member
}

resource "google_service_account_iam_member" "act_as_itself" {
  count              = var.run_launcher == "cloud_run" ? 1 : 0
  service_account_id = google_service_account.pipelines.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.pipelines.member
}
