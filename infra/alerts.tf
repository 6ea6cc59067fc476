# Alerts as code. Dagster OSS has no alerting, so log-based metrics count the JSON lines our
# processes print (observing_pipelines/logging_json.py: `event`, `dagster_event_type`, and the
# labels `job_name` and `run_id`, which Cloud Logging files under the entry's `labels`), and
# alert policies watch them. Each metric labels its points with the job the line names, so a
# new job is covered without a line here. What each alert means and what to do: README.md,
# section "Runbook"; each policy's documentation repeats its part.

locals {
  # Our lines: stdout of the daemon's worker pool (the daemon, its code server with the
  # dead-letter sensor, and runs with the default launcher) and of the run-worker job's
  # executions (runs with run_launcher = "cloud_run"). OR binds tighter than AND in the
  # logging query language, hence the parentheses around each AND.
  pipeline_lines = <<-EOT
    logName="projects/${var.project_id}/logs/run.googleapis.com%2Fstdout"
    ((resource.type="cloud_run_worker_pool" AND resource.labels.worker_pool_name="${google_cloud_run_v2_worker_pool.daemon.name}") OR (resource.type="cloud_run_job" AND resource.labels.job_name="${local.run_worker_job}"))
  EOT

  alert_channels = concat(
    [for channel in google_monitoring_notification_channel.email : channel.id],
    var.alert_notification_channels,
  )

  runbook = "README.md, section \"Runbook\""

  # The daemon's threads that print a line per tick: the scheduler when a schedule is due
  # ("Evaluating schedule `resolve_taxa_schedule` at ...", every 5 minutes at least with
  # resolve_taxa's default cron), the sensor daemon on every sensor evaluation ("Checking for
  # new runs for sensor: dead_letters", every 30 s, once a minute past the relay).
  daemon_threads = {
    schedules = { logger = "dagster.daemon.SchedulerDaemon", seconds = var.schedule_tick_silence_minutes * 60 }
    sensors   = { logger = "dagster.daemon.SensorDaemon", seconds = 10 * 60 }
  }
}

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  project      = var.project_id
  display_name = "observing-pipelines alerts: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }
}

# Log-based counters.

resource "google_logging_metric" "dead_letters" {
  project     = var.project_id
  name        = "observing-pipelines/dead_letters"
  description = "Runs that failed for good (the dead_letters sensor's ERROR line), by job."
  filter      = <<-EOT
    ${local.pipeline_lines}
    jsonPayload.event="dead_letter"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "job"
      value_type  = "STRING"
      description = "The Dagster job the line is about (its labels.job_name)."
    }
  }

  label_extractors = {
    job = "EXTRACT(labels.job_name)"
  }
}

resource "google_logging_metric" "run_failures" {
  project     = var.project_id
  name        = "observing-pipelines/run_failures"
  description = "Failed runs, by job, retried ones included (a dead letter is one no retry follows)."
  filter      = <<-EOT
    ${local.pipeline_lines}
    jsonPayload.dagster_event_type="RUN_FAILURE"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "job"
      value_type  = "STRING"
      description = "The Dagster job the line is about (its labels.job_name)."
    }
  }

  label_extractors = {
    job = "EXTRACT(labels.job_name)"
  }
}

resource "google_logging_metric" "run_successes" {
  project     = var.project_id
  name        = "observing-pipelines/run_successes"
  description = "Successful runs, by job."
  filter      = <<-EOT
    ${local.pipeline_lines}
    jsonPayload.dagster_event_type="RUN_SUCCESS"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "job"
      value_type  = "STRING"
      description = "The Dagster job the line is about (its labels.job_name)."
    }
  }

  label_extractors = {
    job = "EXTRACT(labels.job_name)"
  }
}

resource "google_logging_metric" "step_retries" {
  project     = var.project_id
  name        = "observing-pipelines/step_retries"
  description = "Steps up for retry under their RetryPolicy, by job."
  filter      = <<-EOT
    ${local.pipeline_lines}
    jsonPayload.dagster_event_type="STEP_UP_FOR_RETRY"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "job"
      value_type  = "STRING"
      description = "The Dagster job the line is about (its labels.job_name)."
    }
  }

  label_extractors = {
    job = "EXTRACT(labels.job_name)"
  }
}

# Every job's per-item failure line names its event (the enrichment engine's and resolve_taxa's).
resource "google_logging_metric" "item_failures" {
  project     = var.project_id
  name        = "observing-pipelines/item_failures"
  description = "Items (taxa, names, taxonIDs) whose look-up failed and was recorded to be tried again, by job."
  filter      = <<-EOT
    ${local.pipeline_lines}
    jsonPayload.event="item_failed"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "job"
      value_type  = "STRING"
      description = "The Dagster job the line is about (its labels.job_name)."
    }
  }

  label_extractors = {
    job = "EXTRACT(labels.job_name)"
  }
}

resource "google_logging_metric" "daemon_ticks" {
  project     = var.project_id
  name        = "observing-pipelines/daemon_ticks"
  description = "The daemon's schedule and sensor evaluations, by daemon thread and schedule or sensor."
  filter      = <<-EOT
    ${local.pipeline_lines}
    labels.process="daemon"
    jsonPayload.message=~"^(Evaluating schedule `|Checking for new runs for sensor: )"
  EOT

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "daemon"
      value_type  = "STRING"
      description = "The daemon thread: dagster.daemon.SchedulerDaemon or dagster.daemon.SensorDaemon."
    }
    labels {
      key         = "instigator"
      value_type  = "STRING"
      description = "The schedule or sensor evaluated."
    }
  }

  label_extractors = {
    daemon     = "EXTRACT(jsonPayload.logger)"
    instigator = "REGEXP_EXTRACT(jsonPayload.message, \"^(?:Evaluating schedule `|Checking for new runs for sensor: )([^` ]+)\")"
  }
}

# Alert policies.

resource "google_monitoring_alert_policy" "dead_letter" {
  project      = var.project_id
  display_name = "observing-pipelines: dead letter"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "A run failed for good"
    condition_matched_log {
      filter = google_logging_metric.dead_letters.filter
      label_extractors = {
        job    = "EXTRACT(labels.job_name)"
        run_id = "EXTRACT(labels.run_id)"
      }
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      A run of **$${log.extracted_label.job}** failed for good (run `$${log.extracted_label.run_id}`): no automatic retry follows. Runbook: ${local.runbook}, "Dead letter".

      1. Read its cause: `SELECT job_name, failed_at, step_key, step_attempts, error FROM pipelines.dead_letters WHERE resolved_at IS NULL ORDER BY failed_at DESC;` or the run's lines in Logs Explorer (`labels.run_id="<run id>"`).
      2. Fix what it names: an upstream outage passes (the next scheduled run carries on, its work is saved as it goes); a refused input (`InvalidJobConfig`) is launched again with valid config; a maximum runtime exceeded calls for a smaller `limit`; a bug is fixed and deployed.
      3. Re-execute from failure if the next scheduled run will not do it (UI: the run's page, Re-execute, From failure).
      4. `UPDATE pipelines.dead_letters SET resolved_at = now() WHERE run_id = '<run id>';`
    EOT
  }

  notification_channels = local.alert_channels
}

# An absence condition and a threshold below 1, both over 30 minutes, as abcxyz's
# alerts_cloud_run pairs them: a counter with no matching line writes no point (absence), and
# the threshold covers a series that reports zeros.
resource "google_monitoring_alert_policy" "resolve_taxa_stalled" {
  project      = var.project_id
  display_name = "observing-pipelines: resolve_taxa has not succeeded for 30 minutes"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "No successful resolve_taxa run for 30 minutes"
    condition_absent {
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.run_successes.name}\" AND metric.label.job=\"resolve_taxa\""
      duration = "1800s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.job"]
      }
    }
  }

  conditions {
    display_name = "resolve_taxa successes below 1 for 30 minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.run_successes.name}\" AND metric.label.job=\"resolve_taxa\""
      duration        = "1800s"
      comparison      = "COMPARISON_LT"
      threshold_value = 1

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.job"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      No resolve_taxa run has succeeded for 30 minutes (it is scheduled every 5 minutes, `RESOLVE_TAXA_CRON`): new identifications get no accepted GBIF key and `community_ids` is not refreshed. Runbook: ${local.runbook}, "resolve_taxa has not succeeded for 30 minutes".

      1. If "observing-pipelines: the daemon stopped ticking" is open too, follow that first.
      2. UI, job resolve_taxa: are its runs failing (their dead letters and `RUN_FAILURE` lines say why), is one stuck (a run holds the job's only slot until its 3 h maximum runtime: terminate it), or does none start (start `resolve_taxa_schedule` again)?
      3. The incident closes once a run succeeds.
    EOT
  }

  notification_channels = local.alert_channels
}

resource "google_monitoring_alert_policy" "daemon_stopped_ticking" {
  project      = var.project_id
  display_name = "observing-pipelines: the daemon stopped ticking"
  combiner     = "OR"
  severity     = "CRITICAL"

  dynamic "conditions" {
    for_each = local.daemon_threads
    content {
      display_name = "No ${conditions.key} evaluated for ${conditions.value.seconds / 60} minutes"
      condition_absent {
        filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.daemon_ticks.name}\" AND metric.label.daemon=\"${conditions.value.logger}\""
        duration = "${conditions.value.seconds}s"

        aggregations {
          alignment_period     = "60s"
          per_series_aligner   = "ALIGN_DELTA"
          cross_series_reducer = "REDUCE_SUM"
          group_by_fields      = ["metric.label.daemon"]
        }
      }
    }
  }

  dynamic "conditions" {
    for_each = local.daemon_threads
    content {
      display_name = "${title(conditions.key)} evaluated below 1 for ${conditions.value.seconds / 60} minutes"
      condition_threshold {
        filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.daemon_ticks.name}\" AND metric.label.daemon=\"${conditions.value.logger}\""
        duration        = "${conditions.value.seconds}s"
        comparison      = "COMPARISON_LT"
        threshold_value = 1

        aggregations {
          alignment_period     = "60s"
          per_series_aligner   = "ALIGN_DELTA"
          cross_series_reducer = "REDUCE_SUM"
          group_by_fields      = ["metric.label.daemon"]
        }

        trigger {
          count = 1
        }
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The daemon has evaluated no schedule for ${var.schedule_tick_silence_minutes} minutes, or no sensor for 10 minutes: nothing is scheduled, queued runs are not launched, dead letters are not recorded. Runbook: ${local.runbook}, "The daemon stopped ticking".

      1. Cloud Run, worker pool `observing-pipelines-daemon`: is an instance running? Its logs (`labels.process="daemon"`, `severity>=WARNING`) say why not: "Another daemon holds the lock" (an old instance still holds it; it lets go within about 30 s of its end), "Lost the daemon lock", a database that cannot be reached, a code server that does not load.
      2. Heartbeats: `SELECT daemon_type, timestamp FROM dagster.daemon_heartbeats;` (every 30 s while it runs).
      3. Fix the cause and start a new revision of the worker pool (`terraform apply`, or Edit and deploy in the console); it resumes the schedules where they were.
      4. If the schedules were stopped on purpose, or their crons slowed past ${var.schedule_tick_silence_minutes} minutes, raise `schedule_tick_silence_minutes`.
    EOT
  }

  notification_channels = local.alert_channels
}

resource "google_monitoring_alert_policy" "item_failures" {
  project      = var.project_id
  display_name = "observing-pipelines: per-item failures above ${var.item_failure_threshold} an hour"
  combiner     = "OR"
  severity     = "WARNING"

  conditions {
    display_name = "A job's per-item failures above ${var.item_failure_threshold} in an hour"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.item_failures.name}\""
      duration        = "0s"
      comparison      = "COMPARISON_GT"
      threshold_value = var.item_failure_threshold

      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.job"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Job **$${metric.label.job}** recorded more than ${var.item_failure_threshold} per-item failures in an hour. Its runs still succeed and each item is tried again after its backoff, but an upstream API is failing or answering in a new way. Runbook: ${local.runbook}, "Per-item failures above the threshold".

      1. Read the errors: Logs Explorer, `jsonPayload.event="item_failed" labels.job_name="<job>"`, or the table `pipelines.job_item_failures` (resolve_taxa: `pipelines.resolution_attempts`, `WHERE outcome = 'error'`).
      2. HTTP 429, 5xx or timeouts: the API is down or throttling; nothing to do unless it lasts, then lower the job's `limit` or `GBIF_MAX_CONCURRENCY`.
      3. "Unexpected failure for ..." at ERROR with a traceback: a bug or a changed answer; fix and deploy, then `UPDATE` the failing rows' `next_attempt_at = now()` so the next pass asks again.
      4. The incident closes once the hourly count falls back under the threshold.
    EOT
  }

  notification_channels = local.alert_channels
}
