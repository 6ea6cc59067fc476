# One service account for the daemon, the webserver, run workers and the migrations job, with
# only what they use: Cloud SQL connections, its own secrets, the compute-log bucket, and (for the
# Cloud Run launcher) starting run-worker executions.

resource "google_service_account" "pipelines" {
  project      = var.project_id
  account_id   = "observing-pipelines"
  display_name = "observing-pipelines (Dagster webserver, daemon, runs, migrations)"
}

resource "google_project_iam_member" "cloudsql_client" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = google_service_account.pipelines.member
}

resource "google_project_iam_member" "log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.pipelines.member
}

resource "google_secret_manager_secret_iam_member" "jobs_db_password" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.jobs_db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.pipelines.member
}

resource "google_secret_manager_secret_iam_member" "iucn_token" {
  count     = var.iucn_token_enabled ? 1 : 0
  project   = var.project_id
  secret_id = google_secret_manager_secret.iucn_token[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.pipelines.member
}

resource "google_secret_manager_secret_iam_member" "admin_database_url" {
  project   = var.project_id
  secret_id = var.admin_database_url_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.pipelines.member
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
