# observing-pipelines on Cloud Run: the Dagster daemon (one always-on instance), the webserver
# behind IAP, a migrations job, all against the app's Cloud SQL database over /cloudsql.
# Schedules live in the code; nothing here schedules anything (see legacy-teardown/).

data "google_project" "this" {
  project_id = var.project_id
}

data "google_sql_database_instance" "app" {
  project = var.project_id
  name    = var.cloud_sql_instance
}

locals {
  sql_connection = data.google_sql_database_instance.app.connection_name
  dagster_home   = var.run_launcher == "cloud_run" ? "/opt/dagster/home-cloud-run" : "/opt/dagster/home"
  run_worker_job = "observing-pipelines-run-worker"

  # Everything the jobs need to reach the database and the APIs, shared by every container.
  plain_env = merge(
    {
      DB_HOST                    = "/cloudsql/${local.sql_connection}"
      DB_PORT                    = "5432"
      DB_NAME                    = var.database_name
      DB_USER                    = "jobs_runtime"
      DAGSTER_HOME               = local.dagster_home
      DAGSTER_COMPUTE_LOG_BUCKET = google_storage_bucket.compute_logs.name
    },
    var.run_launcher == "cloud_run" ? {
      GOOGLE_CLOUD_PROJECT     = var.project_id
      CLOUD_RUN_REGION         = var.region
      CLOUD_RUN_RUN_WORKER_JOB = local.run_worker_job
    } : {},
  )
  secret_env = merge(
    { DB_PASSWORD = google_secret_manager_secret.jobs_db_password.secret_id },
    var.iucn_token_enabled ? { IUCN_API_TOKEN = google_secret_manager_secret.iucn_token.secret_id } : {},
  )
}
