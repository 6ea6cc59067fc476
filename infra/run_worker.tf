# Scaling out (run_launcher = "cloud_run"): the CloudRunRunLauncher of dagster-contrib-gcp starts
# an execution of this job for every Dagster run, overriding its command, so runs no longer share
# the daemon's single instance. Build the image with `--build-arg EXTRAS=cloudrun`. Dagster
# handles run failure and retries, so the job itself never retries.
resource "google_cloud_run_v2_job" "run_worker" {
  count = var.run_launcher == "cloud_run" ? 1 : 0

  project             = var.project_id
  location            = var.region
  name                = local.run_worker_job
  deletion_protection = false

  template {
    template {
      service_account = google_service_account.pipelines.email
      max_retries     = 0
      timeout         = "3600s"

      containers {
        image = var.image

        resources {
          limits = {
            cpu    = var.daemon_resources.cpu
            memory = var.daemon_resources.memory
          }
        }

        dynamic "env" {
          for_each = local.plain_env
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = local.secret_env
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value
                version = "latest"
              }
            }
          }
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
}
