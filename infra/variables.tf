variable "project_id" {
  description = "Google Cloud project of the app (Cloud Run, Cloud SQL, Artifact Registry)."
  type        = string
}

variable "region" {
  description = "Region of every resource; the app runs in us-central1."
  type        = string
  default     = "us-central1"
}

variable "cloud_sql_instance" {
  description = "Name of the app's Cloud SQL instance."
  type        = string
  default     = "observing-db"
}

variable "database_name" {
  description = "The app's database: Dagster's storage and the jobs' state live in it too."
  type        = string
  default     = "observing"
}

variable "image" {
  description = "Image from Artifact Registry, by digest, e.g. us-central1-docker.pkg.dev/PROJECT/observing/observing-pipelines@sha256:..."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/", var.image))
    error_message = "The image must come from Artifact Registry (REGION-docker.pkg.dev/...)."
  }
}

variable "admin_database_url_secret" {
  description = "Existing Secret Manager secret with the admin database URL (the app's migrate job uses it)."
  type        = string
  default     = "observing-db-admin-url"
}

variable "iucn_token_enabled" {
  description = "Pass the IUCN token secret to the jobs. Add the secret's first version (gcloud secrets versions add) before turning this on: Cloud Run refuses a revision whose secret has none. Without it, conservation status comes from GBIF."
  type        = bool
  default     = false
}

variable "webserver_accessors" {
  description = "Principals allowed through IAP to the webserver, e.g. [\"group:observing-ops@example.org\"]."
  type        = list(string)
  default     = []
}

variable "read_only_webserver" {
  description = "Also run a --read-only webserver (its own IAP-protected URL) for a wider audience."
  type        = bool
  default     = false
}

variable "read_only_accessors" {
  description = "Principals allowed through IAP to the read-only webserver."
  type        = list(string)
  default     = []
}

variable "run_launcher" {
  description = "\"default\": runs are subprocesses of the daemon's instance. \"cloud_run\": each run is an execution of its own Cloud Run Job (dagster-contrib-gcp), for when one daemon instance is not enough."
  type        = string
  default     = "default"

  validation {
    condition     = contains(["default", "cloud_run"], var.run_launcher)
    error_message = "run_launcher is \"default\" or \"cloud_run\"."
  }
}

variable "daemon_resources" {
  description = "CPU and memory of the daemon's instance (it also executes runs with the default launcher)."
  type        = object({ cpu = string, memory = string })
  default     = { cpu = "1", memory = "1Gi" }
}

variable "webserver_resources" {
  description = "CPU and memory of a webserver instance."
  type        = object({ cpu = string, memory = string })
  default     = { cpu = "1", memory = "1Gi" }
}

variable "compute_log_retention_days" {
  description = "Days step logs are kept in the compute-log bucket."
  type        = number
  default     = 90
}
