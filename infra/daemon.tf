# The Dagster daemon: schedules, sensors, the run queue, run retries. It is a loop, not a
# request handler, so it runs as a worker pool: exactly one instance, CPU always allocated
# (worker pools are billed by instance, never throttled between requests), no ingress at all.
# With the default launcher it also executes the runs, as subprocesses.
resource "google_cloud_run_v2_worker_pool" "daemon" {
  project             = var.project_id
  location            = var.region
  name                = "observing-pipelines-daemon"
  launch_stage        = "BETA"
  deletion_protection = false

  scaling {
    scaling_mode          = "MANUAL"
    manual_instance_count = 1
  }

  template {
    service_account = google_service_account.pipelines.email

    containers {
      image = var.image
      args  = ["daemon"]

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

  # The console and gcloud rewrite scaling fields (hashicorp/terraform-provider-google#25580).
  lifecycle {
    ignore_changes = [scaling[0].scaling_mode]
  }

  depends_on = [
    google_secret_manager_secret_iam_member.jobs_db_password,
    google_secret_manager_secret_iam_member.iucn_token,
  ]
}
