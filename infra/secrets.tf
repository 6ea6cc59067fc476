# The jobs' database password is generated here and stored in Secret Manager; the migrations job
# sets it on the jobs_runtime role (JOBS_RUNTIME_PASSWORD), so the role is never created through
# the Cloud SQL API (which would make it a cloudsqlsuperuser member).
resource "random_password" "jobs_db" {
  length  = 40
  special = false
}

resource "google_secret_manager_secret" "jobs_db_password" {
  project   = var.project_id
  secret_id = "observing-pipelines-db-password"

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "jobs_db_password" {
  secret      = google_secret_manager_secret.jobs_db_password.id
  secret_data = random_password.jobs_db.result
}

# The IUCN token's value is added out of band (`gcloud secrets versions add`), never in state.
# The secret always exists, so its value can be added before `iucn_token_enabled` is turned on.
resource "google_secret_manager_secret" "iucn_token" {
  project   = var.project_id
  secret_id = "observing-pipelines-iucn-token"

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}
