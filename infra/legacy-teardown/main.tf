# Teardown of the old resolve_taxa wiring: a Cloud Scheduler job firing a Cloud Run Job every
# 5 minutes. Both were created outside Terraform (observ-ing/core never held .tf files), so they
# are adopted with `import` blocks and then destroyed; nothing here creates anything.
#
#   cd infra/legacy-teardown
#   terraform init
#   terraform plan -generate-config-out=generated.tf \
#     -var project_id=PROJECT -var scheduler_job=NAME -var run_job=NAME
#   terraform apply  ...same -var flags...   # imports only: the plan must show 0 to add/change
#   terraform destroy -target=google_cloud_scheduler_job.legacy_resolve_taxa ...same -var flags...
#   terraform destroy ...same -var flags...  # then the Cloud Run Job, no longer fired by anyone
#
# Only after the Dagster daemon has run resolve_taxa green for a day (see README "Deploy").

terraform {
  required_version = ">= 1.7.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "7.0.0"
    }
  }
}

variable "project_id" {
  type = string
}

variable "region" {
  type    = string
  default = "us-central1"
}

variable "scheduler_job" {
  description = "Name of the Cloud Scheduler job that fires resolve_taxa (gcloud scheduler jobs list)."
  type        = string
}

variable "run_job" {
  description = "Name of the Cloud Run Job that runs the resolve_taxa binary (gcloud run jobs list)."
  type        = string
}

import {
  to = google_cloud_scheduler_job.legacy_resolve_taxa
  id = "projects/${var.project_id}/locations/${var.region}/jobs/${var.scheduler_job}"
}

import {
  to = google_cloud_run_v2_job.legacy_resolve_taxa
  id = "projects/${var.project_id}/locations/${var.region}/jobs/${var.run_job}"
}
