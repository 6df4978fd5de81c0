# AVON core: the default single-node configuration.
# `make run` starts the core on it: embedded storage under ./data, the
# software keystore, and the SLH-DSA algorithm plugin from examples/.
# Every setting is documented in docs/operations.md.

data_dir   = "./data"
log_level  = "info"
log_format = "text"

api {
  # HTTPS: /healthz, /readyz, /metrics. Without tls_cert_file/tls_key_file a
  # self-signed certificate is made under data_dir/api-tls.
  listen = "127.0.0.1:8443"
}

gateway {
  # The UDP data plane (port 4600). Parsed and validated now; the tunnel
  # itself lands with the gateway.
  listen      = "0.0.0.0:4600"
  tunnel_cidr = "100.96.0.0/16"
  routes      = []
}

plugins {
  # Bare command names are looked up here.
  directory = "./bin"
  # Set to true in production and pin every plugin with sha256 = "...".
  require_checksums = false
}

storage "embedded" {
  path = "avon.db" # relative to data_dir
}

plugin "kms" "soft" {
  command = "kms-soft"
  config {
    # For a first start: a random key file made in the plugin's data dir.
    # In production use passphrase = env("AVON_KMS_PASSPHRASE") or an HSM.
    key_file        = "kms-soft.key"
    create_key_file = true
  }
}

plugin "pqc" "slhdsa" {
  command = "pqc-slhdsa"
}
