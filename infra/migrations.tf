# One-off: `observing-pipelines migrate` as the admin (the jobs role and its grants, our schema,
# Dagster's tables, the jobs_runtime password). Execute it before rolling out a new image:
#   gcloud run jobs execute observing-pipelines-migrate --region us-central1 --wait
resource "google_cloud_run_v2_job" "migrate" {
  project             = var.project_id
  location            = var.region
  name                = "observing-pipelines-migrate"
  deletion_protection = false

  template {
    task_count = 1

    template {
      service_account = google_service_account.migrate.email
      max_retries     = 0
      timeout         = "600s"

      containers {
        image = var.image
        args  = ["migrate"]

        env {
          name = "DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = var.admin_database_url_secret
              version = "latest"
            }
          }
        }

        env {
          name = "JOBS_RUNTIME_PASSWORD"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.jobs_db_password.secret_id
              version = "latest"
            }
          }
        }

        env {
          name  = "DAGSTER_HOME"
          value = local.dagster_home
        }

        volume_mounts {
          name       = "cloudsql"
          mount_path = "/cloudsql"
        }
      }

      volumes {
        name = "cloudsql"
        cloud_sql_instance {
          instances = [local.sql_connection]
        }
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.admin_database_url,
    google_secret_manager_secret_iam_member.jobs_db_password,
  ]
}
