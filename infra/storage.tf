# Step stdout/stderr and sensor logs (GCSComputeLogManager): Cloud Run disks are ephemeral.
resource "google_storage_bucket" "compute_logs" {
  # checkov:skip=CKV_GCP_62:Only the pipelines' service account reads or writes this bucket (IAM below, public access prevented); Cloud Audit Logs record object access, and a second bucket for access logs would only log this one.
  project                     = var.project_id
  name                        = "${var.project_id}-observing-pipelines-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = var.compute_log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
}
