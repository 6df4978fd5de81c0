package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	sdkconfig "github.com/avonzt/avon/sdk/config"
)

func TestFullExample(t *testing.T) {
	path, _ := filepath.Abs("testdata/full.hcl")
	dir := filepath.Dir(path)
	c, diags := Load(path)
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = WriteDiagnostics(&b, c.Files, diags)
		t.Fatal(b.String())
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, filepath.Join(dir, "state")},
		{"log_level", c.LogLevel, "debug"},
		{"log_format", c.LogFormat, "json"},
		{"api.listen", c.API.Listen, "127.0.0.1:9443"},
		{"api.cert", c.API.TLSCertFile, filepath.Join(dir, "tls/api.crt")},
		{"api.key", c.API.TLSKeyFile, "/etc/avon/api.key"},
		{"gateway.cidr", c.Gateway.TunnelCIDR, netip.MustParsePrefix("100.64.0.0/10")},
		{"gateway.routes", len(c.Gateway.Routes), 2},
		{"plugins.dir", c.Plugins.Directory, "/opt/avon/plugins"},
		{"plugins.require", c.Plugins.RequireChecksums, true},
		{"plugins.health", c.Plugins.HealthInterval, 5 * time.Second},
		{"plugins.backoff_min", c.Plugins.RestartBackoffMin, 250 * time.Millisecond},
		{"plugins.start_timeout", c.Plugins.StartTimeout, 10 * time.Second},
		{"storage.path", c.Storage.Path, filepath.Join(dir, "state/db/avon.db")},
		{"plugins", len(c.Plugin), 3},
		{"kms.command", c.Plugin[0].Command, "/opt/avon/plugins/kms-soft"},
		{"kms.env", c.Plugin[0].Env["AVON_KMS_PASSPHRASE"], "fallback-pass"},
		{"kms.args", strings.Join(c.Plugin[0].Args, " "), "-v"},
		{"pqc.command", c.Plugin[1].Command, filepath.Join(dir, "local/pqc-slhdsa")},
		{"pqc.disabled", c.Plugin[1].Disabled, true},
		{"other.uses", strings.Join(c.Plugin[2].Uses["kms"], ","), "soft"},
		{"cache.type", c.Cache.Type, "redis"},
		{"cache.addr", c.Cache.Addr, "10.0.0.5:6379"},
		{"cache.password", c.Cache.Password, "r-pass"},
		{"cache.db", c.Cache.DB, 2},
		{"cache.prefix", c.Cache.KeyPrefix, "avon-test:"},
		{"cache.tls", c.Cache.TLS, true},
		{"cache.timeout", c.Cache.Timeout, 1500 * time.Millisecond},
		{"rng.df", c.RNG.DerivationFunction, true},
		{"rng.pr", c.RNG.PredictionResistance, true},
		{"rng.interval", c.RNG.ReseedInterval, 10 * time.Minute},
		{"rng.bytes", c.RNG.ReseedBytes, int64(1 << 20)},
		{"rng.extra", strings.Join(c.RNG.ExtraSources, ","), "other"},
		{"cal.max_age", c.Calibration.MaxAge, 20 * time.Second},
		{"cal.max_skew", c.Calibration.MaxSkew, 2 * time.Second},
		{"cal.interval", c.Calibration.Interval, 20 * time.Second / 3},
		{"cal.kms", c.Calibration.KMS, "soft"},
		{"cal.key", c.Calibration.Key, "avon-time"},
		{"cal.sources", len(c.Calibration.Sources), 2},
		{"cal.ntp.server", c.Calibration.Sources[1].Server, "127.0.0.1:1123"},
		{"cal.ntp.samples", c.Calibration.Sources[1].Samples, 3},
		{"cal.ntp.timeout", c.Calibration.Sources[1].Timeout, 2 * time.Second},
		{"audit.every", c.Audit.CheckpointEvery, 50},
		{"audit.interval", c.Audit.CheckpointInterval, 30 * time.Second},
		{"audit.kms", c.Audit.KMS, "other"},
		{"audit.key", c.Audit.Key, "audit-ckpt"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	t.Setenv("AVON_TEST_PASS", "from-env-1234")
	schema := sdkconfig.Schema{Attributes: []sdkconfig.Attribute{
		{Name: "passphrase", Type: cty.String, Required: true, Sensitive: true},
		{Name: "retries", Type: cty.Number},
		{Name: "path", Type: cty.String, Default: cty.StringVal("ks")},
	}}
	js, diags := c.Plugin[0].DecodeConfig(c.EvalContext(), schema)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var got map[string]any
	_ = json.Unmarshal(js, &got)
	if got["passphrase"] != "from-env-1234" || got["retries"] != 3.0 || got["path"] != "ks" {
		t.Fatalf("decoded plugin config %s", js)
	}
}

func TestDefaults(t *testing.T) {
	c, diags := Parse([]byte(""), "/etc/avon/config.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if c.DataDir != "/etc/avon/data" || c.API.Listen != "127.0.0.1:8443" || c.Storage.Type != "embedded" ||
		c.Storage.Path != "/etc/avon/data/avon.db" || c.Plugins.Directory != "/etc/avon/bin" ||
		c.Gateway.Listen != "0.0.0.0:4600" || c.Plugins.HealthInterval != 10*time.Second || c.LogLevel != "info" {
		t.Fatalf("defaults: %+v", c)
	}
	if c.Cache.Type != "memory" || !c.RNG.DerivationFunction || c.RNG.PredictionResistance || c.RNG.ReseedInterval != 5*time.Minute || c.RNG.ReseedBytes != 256<<20 ||
		c.Calibration.MaxAge != 30*time.Second || c.Calibration.MaxSkew != 5*time.Second || c.Calibration.Interval != 10*time.Second ||
		len(c.Calibration.Sources) != 1 || c.Calibration.Sources[0].Type != "system" || c.Calibration.KMS != "" ||
		c.Audit.CheckpointEvery != 1000 || c.Audit.CheckpointInterval != 5*time.Minute || c.Audit.Key != "avon-audit" {
		t.Fatalf("service defaults: %+v %+v %+v %+v", c.Cache, c.RNG, c.Calibration, c.Audit)
	}
	// The first enabled kms plugin signs checkpoints and attestations by default.
	c, diags = Parse([]byte("plugin \"kms\" \"off\" {\n  command = \"k\"\n  enabled = false\n}\nplugin \"kms\" \"hsm\" {\n  command = \"k\"\n}\nplugin \"kms\" \"soft\" {\n  command = \"k\"\n}\n"), "/etc/avon/config.hcl")
	if diags.HasErrors() || c.Audit.KMS != "hsm" || c.Calibration.KMS != "hsm" {
		t.Fatalf("default signing kms: %v %q %q", diags, c.Audit.KMS, c.Calibration.KMS)
	}
	c, diags = Parse([]byte("storage \"postgres\" {\n  dsn = \"postgres://avon@db:5432/avon\"\n}\n"), "/etc/avon/config.hcl")
	if diags.HasErrors() || c.Storage.Type != "postgres" || c.Storage.DSN != "postgres://avon@db:5432/avon" ||
		c.Storage.MaxConns != 10 || c.Storage.ConnectTimeout != 5*time.Second {
		t.Fatalf("postgres storage: %v %+v", diags, c.Storage)
	}
	c, diags = Parse([]byte("storage \"redis\" {\n  addr = \"10.1.1.1:6379\"\n}\ncache \"redis\" {\n  addr = \"10.1.1.2:6379\"\n}\n"), "/etc/avon/config.hcl")
	if diags.HasErrors() || c.Storage.Type != "redis" || c.Storage.Redis.Addr != "10.1.1.1:6379" || !c.Storage.RequireDurable ||
		c.Storage.Redis.KeyPrefix != "avon:kv:" || c.Storage.Redis.Timeout != 5*time.Second || c.Cache.Addr != "10.1.1.2:6379" || c.Cache.Timeout != 2*time.Second {
		t.Fatalf("redis storage: %v %+v %+v", diags, c.Storage, c.Cache)
	}
}

func TestGatewayBlock(t *testing.T) {
	dk8h := GatewayDelegatedKey{Enabled: true, Validity: 8 * time.Hour}
	tests := []struct {
		name string
		src  string
		want Gateway
	}{
		{"absent: off", "", Gateway{Enabled: false, Listen: "0.0.0.0:4600", TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"),
			Interface: "avon-gw0", MTU: 1420, AEAD: "auto", PulseInterval: 10 * time.Second, HandshakeRate: 20, MaxSessions: 100000, DelegatedKey: dk8h}},
		{"present: on", "gateway {\n}\n", Gateway{Enabled: true, Listen: "0.0.0.0:4600", TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"),
			Interface: "avon-gw0", MTU: 1420, AEAD: "auto", PulseInterval: 10 * time.Second, HandshakeRate: 20, MaxSessions: 100000, DelegatedKey: dk8h}},
		{"present, disabled", "gateway {\n  enabled = false\n}\n", Gateway{Enabled: false, Listen: "0.0.0.0:4600",
			TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"), Interface: "avon-gw0", MTU: 1420, AEAD: "auto",
			PulseInterval: 10 * time.Second, HandshakeRate: 20, MaxSessions: 100000, DelegatedKey: dk8h}},
		{"everything", `gateway {
  enabled        = true
  listen         = "198.18.0.1:4601"
  tunnel_cidr    = "100.70.0.0/24"
  routes         = ["10.9.0.0/16"]
  interface      = "gw-test"
  mtu            = 1380
  aead           = "chacha20-poly1305"
  pulse_interval = "2500ms"
  handshake_rate = 50
  max_sessions   = 1000
  delegated_key {
    validity = "2h"
  }
}
`, Gateway{Enabled: true, Listen: "198.18.0.1:4601", Endpoint: "198.18.0.1:4601", TunnelCIDR: netip.MustParsePrefix("100.70.0.0/24"),
			Routes: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}, Interface: "gw-test", MTU: 1380, AEAD: "chacha20-poly1305",
			PulseInterval: 2500 * time.Millisecond, HandshakeRate: 50, MaxSessions: 1000,
			DelegatedKey: GatewayDelegatedKey{Enabled: true, Validity: 2 * time.Hour}}},
		{"delegation off", "gateway {\n  delegated_key {\n    enabled = false\n  }\n}\n", Gateway{Enabled: true, Listen: "0.0.0.0:4600",
			TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"), Interface: "avon-gw0", MTU: 1420, AEAD: "auto",
			PulseInterval: 10 * time.Second, HandshakeRate: 20, MaxSessions: 100000, DelegatedKey: GatewayDelegatedKey{Validity: 8 * time.Hour}}},
		{"dual stack", "gateway {\n  tunnel_cidr6 = \"fd00:96::/64\"\n  routes = [\"10.9.0.0/16\", \"fd00:77::/64\"]\n}\n", Gateway{Enabled: true,
			Listen: "0.0.0.0:4600", TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"), TunnelCIDR6: netip.MustParsePrefix("fd00:96::/64"),
			Routes:    []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("fd00:77::/64")},
			Interface: "avon-gw0", MTU: 1420, AEAD: "auto", PulseInterval: 10 * time.Second, HandshakeRate: 20, MaxSessions: 100000, DelegatedKey: dk8h}},
		{"endpoint", "gateway {\n  endpoint = \"gw.example.com:4600\"\n}\n", Gateway{Enabled: true, Listen: "0.0.0.0:4600",
			Endpoint: "gw.example.com:4600", TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"), Interface: "avon-gw0", MTU: 1420,
			AEAD: "auto", PulseInterval: 10 * time.Second, HandshakeRate: 20, MaxSessions: 100000, DelegatedKey: dk8h}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, diags := Parse([]byte(tc.src), "/etc/avon/config.hcl")
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			got, want := fmt.Sprintf("%+v", c.Gateway), fmt.Sprintf("%+v", tc.want)
			if got != want {
				t.Errorf("gateway\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestDefaultConfigNeedsNoRoot: the repository's config.hcl (make run)
// keeps the gateway off, since a TUN device needs root.
func TestDefaultConfigNeedsNoRoot(t *testing.T) {
	c, diags := Load("../../config.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if c.Gateway.Enabled {
		t.Fatal("config.hcl enables the gateway: make run would need root")
	}
}

// diagAt is an expected diagnostic: a summary fragment at line:col.
type diagAt struct {
	summary   string
	line, col int
	detail    string // fragment, optional
}

func TestDiagnostics(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []diagAt
	}{
		{"unknown attribute", "data_dirr = \"x\"\n", []diagAt{{"Unsupported argument", 1, 1, `Did you mean "data_dir"?`}}},
		{"unknown block", "apii {\n}\n", []diagAt{{"Unsupported block type", 1, 1, `Did you mean "api"?`}}},
		{"wrong type", "api {\n  listen = [1]\n}\n", []diagAt{{"Unsuitable value type", 2, 12, ""}}},
		{"missing command", "plugin \"kms\" \"soft\" {\n}\n", []diagAt{{"Missing required argument", 1, 21, "command"}}},
		{"unknown kind", "plugin \"kmss\" \"soft\" {\n  command = \"x\"\n}\n", []diagAt{{"Unknown plugin kind", 1, 8, "valid kinds are kms, ca, acme, policy, pqc"}}},
		{"bad name", "plugin \"kms\" \"Soft!\" {\n  command = \"x\"\n}\n", []diagAt{{"Invalid plugin name", 1, 14, ""}}},
		{"duplicate plugin", "plugin \"kms\" \"a\" {\n  command = \"x\"\n}\nplugin \"kms\" \"a\" {\n  command = \"y\"\n}\n",
			[]diagAt{{"Duplicate plugin", 4, 1, "already declared at"}}},
		{"duplicate api", "api {\n}\napi {\n}\n", []diagAt{{"Duplicate api block", 3, 1, "first is at"}}},
		{"bad sha", "plugin \"kms\" \"a\" {\n  command = \"x\"\n  sha256 = \"XYZ\"\n}\n", []diagAt{{"Invalid sha256", 3, 12, "64 lowercase hex"}}},
		{"checksum required", "plugins {\n  require_checksums = true\n}\nplugin \"kms\" \"a\" {\n  command = \"x\"\n}\n",
			[]diagAt{{"Missing plugin checksum", 4, 1, "sha256sum"}}},
		{"bad duration", "plugins {\n  health_interval = \"soon\"\n}\n", []diagAt{{"Invalid duration", 2, 21, "10s"}}},
		{"bad listen", "api {\n  listen = \"nohost\"\n}\n", []diagAt{{"Invalid listen address", 2, 12, ""}}},
		{"bad cidr", "gateway {\n  routes = [\"10.0.0.1/8\"]\n}\n", []diagAt{{"Invalid CIDR", 2, 12, `did you mean "10.0.0.0/8"`}}},
		{"gateway mtu", "gateway {\n  mtu = 100\n}\n", []diagAt{{"Invalid mtu", 2, 9, "576 to 65535"}}},
		{"gateway aead", "gateway {\n  aead = \"aes-128-gcm\"\n}\n", []diagAt{{"Invalid aead", 2, 10, "auto, aes-256-gcm, chacha20-poly1305"}}},
		{"gateway pulse", "gateway {\n  pulse_interval = \"500ms\"\n}\n", []diagAt{{"Invalid pulse_interval", 2, 20, "1s to 10m0s"}}},
		{"gateway pulse garbage", "gateway {\n  pulse_interval = \"often\"\n}\n", []diagAt{{"Invalid duration", 2, 20, ""}}},
		{"delegated key validity", "gateway {\n  delegated_key {\n    validity = \"48h\"\n  }\n}\n", []diagAt{{"Invalid delegated key validity", 3, 16, "10m0s to 24h0m0s"}}},
		{"delegated key twice", "gateway {\n  delegated_key {\n  }\n  delegated_key {\n  }\n}\n", []diagAt{{"Duplicate delegated_key block", 4, 3, ""}}},
		{"gateway rate", "gateway {\n  handshake_rate = 0\n}\n", []diagAt{{"Invalid handshake_rate", 2, 20, "1 to 100000"}}},
		{"gateway sessions", "gateway {\n  max_sessions = 20000000\n}\n", []diagAt{{"Invalid max_sessions", 2, 18, "1 to 10000000"}}},
		{"gateway interface", "gateway {\n  interface = \"a/very/long/name0\"\n}\n", []diagAt{{"Invalid interface name", 2, 15, "Linux interface name"}}},
		{"gateway enabled", "gateway {\n  enabled = \"maybe\"\n}\n", []diagAt{{"Unsuitable value type", 2, 14, ""}}},
		{"gateway endpoint wildcard", "gateway {\n  endpoint = \"0.0.0.0:4600\"\n}\n", []diagAt{{"Invalid endpoint", 2, 14, "agents can reach"}}},
		{"gateway endpoint port", "gateway {\n  endpoint = \"gw.example.com\"\n}\n", []diagAt{{"Invalid endpoint", 2, 14, ""}}},
		{"gateway cidr v6", "gateway {\n  tunnel_cidr = \"fd00::/64\"\n}\n", []diagAt{{"Invalid tunnel_cidr", 2, 17, "tunnel_cidr6"}}},
		{"gateway cidr6 v4", "gateway {\n  tunnel_cidr6 = \"10.0.0.0/24\"\n}\n", []diagAt{{"Invalid tunnel_cidr6", 2, 18, "IPv4 network goes in tunnel_cidr"}}},
		{"gateway cidr6 too large", "gateway {\n  tunnel_cidr6 = \"fd00::/48\"\n}\n", []diagAt{{"Invalid tunnel_cidr6", 2, 18, "too large"}}},
		{"gateway cidr6 too small", "gateway {\n  tunnel_cidr6 = \"fd00::/127\"\n}\n", []diagAt{{"Invalid tunnel_cidr6", 2, 18, "too small"}}},
		{"gateway cidr6 link-local", "gateway {\n  tunnel_cidr6 = \"fe80::/64\"\n}\n", []diagAt{{"Invalid tunnel_cidr6", 2, 18, "link-local"}}},
		{"gateway cidr6 host bits", "gateway {\n  tunnel_cidr6 = \"fd00::1/64\"\n}\n", []diagAt{{"Invalid CIDR", 2, 18, `did you mean "fd00::/64"`}}},
		{"gateway route v6 without cidr6", "gateway {\n  routes = [\"fd00:77::/64\"]\n}\n", []diagAt{{"IPv6 route without an IPv6 tunnel network", 1, 1, "tunnel_cidr6"}}},
		{"gateway route link-local", "gateway {\n  tunnel_cidr6 = \"fd00::/64\"\n  routes = [\"fe80::/10\"]\n}\n", []diagAt{{"Invalid route", 3, 12, "link-local"}}},
		{"gateway route multicast", "gateway {\n  routes = [\"224.0.0.0/4\"]\n}\n", []diagAt{{"Invalid route", 2, 12, "multicast"}}},
		{"gateway route overlaps cidr6", "gateway {\n  tunnel_cidr6 = \"fd00:96::/64\"\n  routes = [\"fd00:96::/48\"]\n}\n", []diagAt{{"Route overlaps the tunnel network", 1, 1, "tunnel_cidr6 fd00:96::/64"}}},
		{"gateway mtu v6", "gateway {\n  tunnel_cidr6 = \"fd00::/64\"\n  mtu = 1000\n}\n", []diagAt{{"Invalid mtu", 1, 1, "at least 1280"}}},
		{"gateway route overlap", "gateway {\n  routes = [\"100.96.3.0/24\"]\n}\n", []diagAt{{"Route overlaps the tunnel network", 1, 1, "100.96.0.0/16"}}},
		{"unknown storage", "storage \"mysql\" {\n}\n", []diagAt{{"Unknown storage type", 1, 9, "known types: embedded, postgres, redis"}}},
		{"uses unknown", "plugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = { kms = \"nope\" }\n}\n", []diagAt{{"Unknown plugin in uses", 3, 10, `no plugin "kms" "nope"`}}},
		{"uses list unknown", "plugin \"kms\" \"soft\" {\n  command = \"k\"\n}\nplugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = { kms = [\"soft\", \"hsm\"] }\n}\n",
			[]diagAt{{"Unknown plugin in uses", 6, 10, `no plugin "kms" "hsm"`}}},
		{"uses list empty", "plugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = { kms = [] }\n}\n", []diagAt{{"Invalid uses", 3, 10, "empty list"}}},
		{"uses list twice", "plugin \"kms\" \"soft\" {\n  command = \"k\"\n}\nplugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = { kms = [\"soft\", \"soft\"] }\n}\n",
			[]diagAt{{"Invalid uses", 6, 10, `names "soft" twice`}}},
		{"uses list number", "plugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = { kms = [\"a\", 1] }\n}\n", []diagAt{{"Invalid uses", 3, 10, "a plugin name"}}},
		{"uses not object", "plugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = \"soft\"\n}\n", []diagAt{{"Invalid uses", 3, 10, "want an object"}}},
		{"uses list disabled", "plugin \"kms\" \"soft\" {\n  command = \"k\"\n}\nplugin \"kms\" \"hsm\" {\n  command = \"h\"\n  enabled = false\n}\nplugin \"ca\" \"d\" {\n  command = \"x\"\n  uses = { kms = [\"soft\", \"hsm\"] }\n}\n",
			[]diagAt{{"Disabled plugin in uses", 10, 10, `kms = "hsm"`}}},
		{"tls half", "api {\n  tls_cert_file = \"a\"\n}\n", []diagAt{{"Incomplete TLS settings", 1, 1, ""}}},
		{"env unset", "data_dir = env(\"AVON_SURELY_UNSET_VAR\")\n", []diagAt{{"Error in function call", 1, 12, "AVON_SURELY_UNSET_VAR is not set"}}},
		{"bad log level", "log_level = \"loud\"\n", []diagAt{{"Invalid log level", 1, 13, ""}}},
		{"syntax", "api {\n", []diagAt{{"Unclosed configuration block", 1, 5, ""}}},
		{"postgres dsn missing", "storage \"postgres\" {\n}\n", []diagAt{{"Missing required argument", 1, 20, "dsn"}}},
		{"postgres dsn garbage", "storage \"postgres\" {\n  dsn = \"s3cretpw\"\n}\n", []diagAt{{"Invalid PostgreSQL DSN", 2, 9, "not shown"}}},
		{"redis storage addr", "storage \"redis\" {\n  addr = \"r\"\n  require_durable = \"yes\"\n}\n", []diagAt{{"Invalid address", 2, 10, "host:port"}, {"Unsuitable value type", 3, 22, ""}}},
		{"unknown cache", "cache \"memcached\" {\n}\n", []diagAt{{"Unknown cache type", 1, 7, "known types: memory, redis"}}},
		{"redis addr", "cache \"redis\" {\n  addr = \"localhost\"\n}\n", []diagAt{{"Invalid address", 2, 10, "host:port"}}},
		{"redis db", "cache \"redis\" {\n  addr = \"r:6379\"\n  db = 99\n}\n", []diagAt{{"Invalid Redis database", 3, 8, "0 to 15"}}},
		{"unknown time source", "calibration {\n  source \"gps\" {}\n}\n", []diagAt{{"Unknown time source", 2, 10, "system, ntp"}}},
		{"ntp no server", "calibration {\n  source \"ntp\" {}\n}\n", []diagAt{{"Missing required argument", 2, 16, "server"}}},
		{"interval too long", "calibration {\n  max_age = \"10s\"\n  interval = \"10s\"\n}\n", []diagAt{{"Invalid calibration interval", 3, 14, "shorter than max_age"}}},
		{"audit every", "audit {\n  checkpoint_every = 0\n}\n", []diagAt{{"Invalid checkpoint_every", 2, 22, ""}}},
		{"audit unknown kms", "audit {\n  kms = \"nope\"\n}\n", []diagAt{{"Unknown kms plugin", 1, 1, `names no enabled`}}},
		{"rng bytes", "rng {\n  reseed_bytes = 5\n}\n", []diagAt{{"Invalid reseed_bytes", 2, 18, ""}}},
		{"rng unknown source", "rng {\n  extra_sources = [\"hsm\"]\n}\n", []diagAt{{"Unknown entropy source", 1, 1, "hsm"}}},
		{"several at once", "data_dirr = 1\nlog_level = \"loud\"\nplugin \"x\" \"y\" {\n  command = \"c\"\n}\n",
			[]diagAt{{"Unsupported argument", 1, 1, ""}, {"Invalid log level", 2, 13, ""}, {"Unknown plugin kind", 3, 8, ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, diags := Parse([]byte(tc.src), "test.hcl")
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			if c.HasConfig() {
				t.Fatal("a config was returned alongside errors")
			}
			if len(diags) != len(tc.want) {
				t.Fatalf("got %d diagnostics, want %d: %v", len(diags), len(tc.want), diags)
			}
			for i, w := range tc.want {
				d := diags[i]
				if !strings.Contains(d.Summary, w.summary) || !strings.Contains(d.Detail, w.detail) {
					t.Errorf("diag %d = %q / %q, want %q / %q", i, d.Summary, d.Detail, w.summary, w.detail)
				}
				if d.Subject == nil || d.Subject.Start.Line != w.line || d.Subject.Start.Column != w.col {
					t.Errorf("diag %d %q at %v, want %d:%d", i, d.Summary, d.Subject, w.line, w.col)
				}
			}
			var b bytes.Buffer
			if err := WriteDiagnostics(&b, c.Files, diags); err != nil {
				t.Fatal(err)
			}
			first := tc.want[0]
			if !strings.Contains(b.String(), "test.hcl:"+itoa(first.line)+":"+itoa(first.col)+": error: ") {
				t.Errorf("printed diagnostics lack file:line:col:\n%s", b.String())
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestUsesList: uses takes a name or a list of names per kind, the first
// the default, order kept.
func TestUsesList(t *testing.T) {
	src := `
plugin "kms" "soft" {
  command = "k"
}
plugin "kms" "hsm" {
  command = "h"
}
plugin "pqc" "slh" {
  command = "p"
}
plugin "ca" "d" {
  command = "x"
  uses    = { kms = ["hsm", "soft"], pqc = "slh" }
}
`
	c, diags := Parse([]byte(src), "test.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	got := c.Plugin[3].Uses
	if strings.Join(got["kms"], ",") != "hsm,soft" || strings.Join(got["pqc"], ",") != "slh" || len(got) != 2 {
		t.Fatalf("uses = %v", got)
	}
}

func TestFileFunction(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pass.txt"), []byte("s3cret-pass"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := "plugin \"kms\" \"soft\" {\n  command = \"k\"\n  config {\n    passphrase = file(\"pass.txt\")\n  }\n}\n"
	c, diags := Parse([]byte(src), filepath.Join(dir, "config.hcl"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	s := sdkconfig.Schema{Attributes: []sdkconfig.Attribute{{Name: "passphrase", Type: cty.String}}}
	js, diags := c.Plugin[0].DecodeConfig(c.EvalContext(), s)
	if diags.HasErrors() || string(js) != `{"passphrase":"s3cret-pass"}` {
		t.Fatalf("%s %v", js, diags)
	}
	src = strings.Replace(src, "pass.txt", "missing.txt", 1)
	c, _ = Parse([]byte(src), filepath.Join(dir, "config.hcl"))
	_, diags = c.Plugin[0].DecodeConfig(c.EvalContext(), s)
	if !diags.HasErrors() || diags[0].Subject.Start.Line != 4 {
		t.Fatalf("missing file: %v", diags)
	}
	// Plugin body mistakes carry the plugin's name and the body's position.
	src = "plugin \"kms\" \"soft\" {\n  command = \"k\"\n  config {\n    passphras = \"x\"\n  }\n}\n"
	c, _ = Parse([]byte(src), "c.hcl")
	_, diags = c.Plugin[0].DecodeConfig(c.EvalContext(), s)
	if !diags.HasErrors() || !strings.Contains(diags[0].Summary, `plugin "kms" "soft"`) || diags[0].Subject.Start.Line != 4 ||
		!strings.Contains(diags[0].Detail, `Did you mean "passphrase"?`) {
		t.Fatalf("plugin body diagnostics: %v", diags)
	}
	var _ hcl.Diagnostics = diags
}

func FuzzParse(f *testing.F) {
	seed, _ := os.ReadFile("testdata/full.hcl")
	f.Add(seed)
	f.Add([]byte("plugin \"kms\" \"a\" { command = \"x\" uses = { kms = \"a\" } }"))
	f.Add([]byte("api { listen = \"[::1]:1\" }"))
	f.Add([]byte("gateway {\n tunnel_cidr6 = \"fd00:96::/64\"\n routes = [\"fd00:77::/64\", \"10.0.0.0/8\"]\n mtu = 1280\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, diags := Parse(src, "fuzz.hcl")
		if diags.HasErrors() && c.HasConfig() {
			t.Fatal("config returned with errors")
		}
		var b bytes.Buffer
		_ = WriteDiagnostics(&b, c.Files, diags)
	})
}

// TestDiagnosticsHideSecrets: a mistake on a line holding a DSN or a
// password prints the line with its literals masked.
func TestDiagnosticsHideSecrets(t *testing.T) {
	src := "storage \"postgres\" {\n  dsn = \"postgres://avon:Top%zzSecretPw@db.example:5432/avon\"\n  max_conns = 0\n}\n" +
		"cache \"redis\" {\n  addr = \"r:6379\"\n  password = 12\n  db = 99\n}\n" +
		"plugin \"kms\" \"soft\" {\n  command = \"k\"\n  env = { AVON_KMS_PASSPHRASE = env(\"PASS_VAR\", \"default-S3cret\") }\n  uses = { kms = \"x\" }\n}\n"
	c, diags := Parse([]byte(src), "secret.hcl")
	if !diags.HasErrors() {
		t.Fatal("no error")
	}
	var b bytes.Buffer
	_ = WriteDiagnostics(&b, c.Files, diags)
	out := b.String()
	for _, secret := range []string{"Top%zzSecretPw", "default-S3cret"} {
		if strings.Contains(out, secret) {
			t.Errorf("diagnostics print %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "secret.hcl:2:9: error: Invalid PostgreSQL DSN") || !strings.Contains(out, `dsn = "****`) {
		t.Errorf("the DSN diagnostic lost its position or its masked line:\n%s", out)
	}
	if maskSecrets(`  passphrase = env("AVON_PASS")`) != `  passphrase = env("AVON_PASS")` {
		t.Error("the name of the environment variable was masked")
	}
	if got := maskSecrets(`  password = "a\"b"`); got != `  password = "****"` {
		t.Errorf("escaped quote: %s", got)
	}
	if got := maskSecrets(`  listen = "127.0.0.1:1"`); got != `  listen = "127.0.0.1:1"` {
		t.Errorf("an ordinary line was masked: %s", got)
	}
}

// TestWriteDiagnosticsBounded: a file of one long line full of mistakes
// prints at most maxDiagnostics diagnostics, each source line cut around
// its column with the caret still under the right character.
func TestWriteDiagnosticsBounded(t *testing.T) {
	src := []byte(strings.Repeat("$", 4000))
	c, diags := Parse(src, "long.hcl")
	if !diags.HasErrors() {
		t.Fatal("no errors for a line of $")
	}
	var b bytes.Buffer
	if err := WriteDiagnostics(&b, c.Files, diags); err != nil {
		t.Fatal(err)
	}
	if len(diags) > maxDiagnostics && !strings.Contains(b.String(), fmt.Sprintf("... and %d more", len(diags)-maxDiagnostics)) {
		t.Errorf("%d diagnostics printed without the count of the rest", len(diags))
	}
	if b.Len() > maxDiagnostics*(2*maxExcerpt+400) {
		t.Fatalf("%d bytes printed for %d diagnostics", b.Len(), len(diags))
	}

	// The caret points at the column's character inside the excerpt.
	for _, col := range []int{1, 50, 2000, 3990, 4000} {
		line := strings.Repeat("a", col-1) + "X" + strings.Repeat("b", 4000-col)
		ex, c := excerpt(line, col)
		rs := []rune(ex)
		if n := len(rs); n > maxExcerpt+2 {
			t.Fatalf("col %d: excerpt of %d characters", col, n)
		}
		if c < 1 || c > len(rs) || rs[c-1] != 'X' {
			t.Fatalf("col %d: caret at %d of %q", col, c, ex)
		}
	}
	if ex, c := excerpt("short = 1", 3); ex != "short = 1" || c != 3 {
		t.Fatalf("a short line changed: %q %d", ex, c)
	}
}
