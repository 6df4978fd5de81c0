data_dir   = "state"
log_level  = "debug"
log_format = "json"

api {
  listen        = "127.0.0.1:9443"
  tls_cert_file = "tls/api.crt"
  tls_key_file  = "/etc/avon/api.key"
}

gateway {
  listen      = "0.0.0.0:4600"
  tunnel_cidr = "100.64.0.0/10"
  routes      = ["10.1.0.0/16", "192.168.7.0/24"]
}

plugins {
  directory           = "/opt/avon/plugins"
  require_checksums   = true
  health_interval     = "5s"
  restart_backoff_min = "250ms"
  restart_backoff_max = "10s"
}

storage "embedded" {
  path = "db/avon.db"
}

plugin "kms" "soft" {
  command = "kms-soft"
  sha256  = "0000000000000000000000000000000000000000000000000000000000000000"
  args    = ["-v"]
  env     = { AVON_KMS_PASSPHRASE = env("AVON_TEST_PASS", "fallback-pass") }
  config {
    passphrase = env("AVON_TEST_PASS", "fallback-pass")
    retries    = 3
  }
}

plugin "pqc" "slhdsa" {
  command = "./local/pqc-slhdsa"
  sha256  = "1111111111111111111111111111111111111111111111111111111111111111"
  enabled = false
}

plugin "kms" "other" {
  command = "/usr/lib/avon/kms-x"
  sha256  = "2222222222222222222222222222222222222222222222222222222222222222"
  uses    = { kms = "soft" }
}

cache "redis" {
  addr       = "10.0.0.5:6379"
  password   = env("AVON_TEST_REDIS_PASS", "r-pass")
  db         = 2
  key_prefix = "avon-test:"
  tls        = true
  timeout    = "1500ms"
}

rng {
  prediction_resistance = true
  reseed_interval       = "10m"
  reseed_bytes          = 1048576
  extra_sources         = ["other"]
}

calibration {
  max_age  = "20s"
  max_skew = "2s"
  kms      = "soft"
  source "system" {}
  source "ntp" {
    server  = "127.0.0.1:1123"
    samples = 3
  }
}

audit {
  checkpoint_every    = 50
  checkpoint_interval = "30s"
  kms                 = "other"
  key                 = "audit-ckpt"
}
