# The Dagster UI and GraphQL API. Dagster OSS has no authentication, and anyone who reaches
# /graphql can launch runs, so the service is IAP-protected (Cloud Run's own IAP integration):
# no public invoker: only the IAP service agent may invoke it, and only `webserver_accessors`
# get through IAP. Probes hit /health (the storage answers).
locals {
  webservers = merge(
    { "observing-pipelines-webserver" = { read_only = false, accessors = var.webserver_accessors } },
    var.read_only_webserver ? {
      "observing-pipelines-webserver-ro" = { read_only = true, accessors = var.read_only_accessors }
    } : {},
  )
  webserver_accessors = merge([
    for name, server in local.webservers : { for member in server.accessors : "${name} ${member}" => { service = name, member = member } }
  ]...)
}

resource "google_cloud_run_v2_service" "webserver" {
  for_each = local.webservers

  project             = var.project_id
  location            = var.region
  name                = each.key
  launch_stage        = "BETA"
  ingress             = "INGRESS_TRAFFIC_ALL"
  iap_enabled         = true
  deletion_protection = false

  template {
    service_account = google_service_account.pipelines.email

    scaling {
      min_instance_count = 0
      max_instance_count = 2
    }

    containers {
      image = var.image
      args  = each.value.read_only ? ["webserver", "--read-only"] : ["webserver"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.webserver_resources.cpu
          memory = var.webserver_resources.memory
        }
      }

      # /health answers 503 while the run storage is unreachable (Dagster's /server_info answers
      # from memory): a revision that cannot reach the database gets no traffic, and one that
      # has lost it for three minutes is restarted.
      startup_probe {
        http_get {
          path = "/health"
        }
        initial_delay_seconds = 5
        period_seconds        = 10
        timeout_seconds       = 5
        failure_threshold     = 12
      }

      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 6
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

  depends_on = [
    google_secret_manager_secret_iam_member.jobs_db_password,
    google_secret_manager_secret_iam_member.iucn_token,
  ]
}

# IAP's service agent is the only invoker of the service itself.
resource "google_cloud_run_v2_service_iam_member" "iap_invoker" {
  for_each = local.webservers

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.webserver[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-iap.iam.gserviceaccount.com"
}

resource "google_iap_web_cloud_run_service_iam_member" "accessor" {
  for_each = local.webserver_accessors

  project                = var.project_id
  location               = var.region
  cloud_run_service_name = google_cloud_run_v2_service.webserver[each.value.service].name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.value.member
}
