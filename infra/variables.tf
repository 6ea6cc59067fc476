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

variable "alert_emails" {
  description = "Addresses every alert policy notifies, an email channel each. None: the policies still open incidents in Cloud Monitoring, and nobody is told."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for address in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", address))])
    error_message = "alert_emails holds email addresses."
  }
}

variable "alert_notification_channels" {
  description = "Existing notification channels every alert policy notifies too (projects/PROJECT/notificationChannels/ID: Slack, PagerDuty, SMS)."
  type        = list(string)
  default     = []
}

variable "item_failure_threshold" {
  description = "Per-item failures of one job in an hour above which an alert opens (the default limit of an enrichment pass is 500 taxa)."
  type        = number
  default     = 100

  validation {
    condition     = var.item_failure_threshold > 0
    error_message = "item_failure_threshold is above 0."
  }
}

variable "schedule_tick_silence_minutes" {
  description = "Minutes without any schedule evaluated after which the daemon counts as stopped; keep it above the shortest schedule's interval (resolve_taxa: 5 minutes)."
  type        = number
  default     = 15

  validation {
    condition     = var.schedule_tick_silence_minutes >= 5 && floor(var.schedule_tick_silence_minutes) == var.schedule_tick_silence_minutes
    error_message = "schedule_tick_silence_minutes is a whole number of minutes, at least 5."
  }
}
