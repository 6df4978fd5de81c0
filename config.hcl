# AVON core: the default single-node configuration.
# `make run` starts the core on it: embedded storage under ./data, the
# software keystore, the CA, the Cedar policy engine, and the SLH-DSA
# algorithm plugin from examples/.
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
  # The tunnel gateway: UDP port 4600, a TUN device (avon-gw0) holding the
  # tunnel network's first address, agents' packets forwarded to `routes`.
  # Off here because it needs root (CAP_NET_ADMIN and /dev/net/tun), and
  # `make run` must work without. A `gateway` block is enabled by default:
  # set enabled = true (or delete the line) to run it, and see "Running the
  # gateway" in docs/operations.md (IP forwarding, routes back to
  # tunnel_cidr, the endpoint agents are told).
  enabled     = false
  listen      = "0.0.0.0:4600"
  # endpoint  = "gw.example.com:4600" # what agents connect to (default: listen unless 0.0.0.0)
  tunnel_cidr = "100.96.0.0/16"
  # tunnel_cidr6 = "fd00:96::/64"  # IPv6 inside the tunnel too (dual stack; IPv6 routes need it)
  routes      = []
  # interface      = "avon-gw0"
  # mtu            = 1420
  # aead           = "auto"   # or "aes-256-gcm", "chacha20-poly1305"
  # pulse_interval = "10s"
  # handshake_rate = 20       # handshakes per second per source
  # max_sessions   = 100000
  # Policy: "enforce" admits every session (Action::"connect": the set
  # needs a connect permit) and decides every new flow (Action::"reach")
  # with the policy plugin, fail closed; "off" (the default) leaves it to
  # the firewall.
  # policy {
  #   plugin = "abac"   # a plugin "policy" "abac" block
  #   mode   = "enforce"
  # }
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
# Several core replicas share PostgreSQL and Redis instead:
#   storage "postgres" { dsn = env("AVON_PG_DSN") }
#   cache "redis" { addr = "10.0.0.5:6379" }

rng {
  # SP 800-90A CTR_DRBG (AES-256) seeded from the kernel, health-tested;
  # it fails closed. Mix in an HSM's generator with extra_sources = ["hsm"].
  derivation_function   = true
  prediction_resistance = false
  reseed_interval       = "5m"
}

calibration {
  # Time-dependent decisions fail closed when the calibration is older
  # than max_age; timestamps further than max_skew are refused.
  max_age  = "30s"
  max_skew = "5s"
  source "system" {}
  # source "ntp" { server = "127.0.0.1:123" }
}

audit {
  # Signed (ML-DSA-65, key "avon-audit" in the kms plugin) checkpoints.
  checkpoint_every    = 1000
  checkpoint_interval = "5m"
}

auth {
  # Operator login (avon login): access tokens signed with ML-DSA-65 by the
  # key "avon-oauth" in the kms plugin; accounts: avon user add.
  # issuer    = "https://avon.example.com:8443"  # the URL operators use
  access_ttl  = "5m"
  refresh_ttl = "720h"
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

plugin "ca" "dilithium" {
  # X.509 with ML-DSA (RFC 9881): root ML-DSA-87 and issuing ML-DSA-65,
  # keys in the software keystore above.
  command = "ca-dilithium"
  uses    = { kms = "soft" }
  config {
    organization = "AVON"
    # An ECDSA-P384 root and issuer too, so TLS clients that cannot verify
    # ML-DSA yet trust the certificates ACME issues for ECDSA keys.
    classical_issuer = true
  }
}

plugin "acme" "acme" {
  # RFC 8555 at https://<api listen>/acme/directory (certbot, lego, ...),
  # issuing through the CA above. See "Issuing TLS certificates with
  # ACME" in docs/operations.md.
  command = "acme"
  uses    = { ca = "dilithium" }
  config {
    # allowed_domains = ["corp.example"]
    # require_eab     = true   # keys from: avon acme eab create
  }
}

plugin "policy" "abac" {
  # Cedar access policies (docs/policy.md). Sets come from the API, or
  # from <set>.cedar files in policy_dir; the gateway asks default_set.
  command = "policy-abac"
  config {
    policy_dir               = ""
    default_set              = "default"
    report_only              = false
    decision_log_sample_rate = 0.01
  }
}
