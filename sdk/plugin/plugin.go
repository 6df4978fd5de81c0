// Package plugin is how an AVON plugin serves itself and how a host talks to
// it. A plugin's main is one call:
//
//	func main() { plugin.Serve(&plugin.ServeConfig{KMS: mykms.New()}) }
//
// Serve speaks go-plugin over gRPC only, with the handshake and versioned
// plugin sets defined here, logs JSON to stderr for the host to re-emit, and
// exits by itself if the host process dies (a parent-death watchdog), so no
// plugin outlives its core.
//
// Lifecycle of a plugin process, as the host drives it:
//
//	start -> GetInfo -> GetConfigSchema -> (ValidateConfig) -> Configure -> calls ... -> Health pings ... -> kill
//
// Configure may be called again when the operator reloads the configuration.
// Calls other than the plugin service's may arrive only after a successful
// Configure; implementations should answer errdef.ErrNotConfigured before.
package plugin

import (
	"context"
	"errors"
	"strings"

	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/pqc"
)

// Kind names a plugin kind. The names are part of the protocol.
type Kind string

// Plugin kinds.
const (
	KindKMS    Kind = "kms"
	KindCA     Kind = "ca"
	KindACME   Kind = "acme"
	KindPolicy Kind = "policy"
	KindPQC    Kind = "pqc"
)

// Kinds lists every plugin kind in a stable order.
var Kinds = []Kind{KindKMS, KindCA, KindACME, KindPolicy, KindPQC}

// ProtocolVersion is the major version of the plugin protocols this SDK
// speaks (the `v1` in avon.<kind>.v1). Minor versions are additive and
// feature-detected through GetInfo capabilities and ErrNotImplemented.
const ProtocolVersion = 1

// ProtocolMinor is the minor version of the protocols this SDK implements.
// Minor 1: ca ListCertificates, RotateIssuer, Initialize and issuer
// generations; host KMSNamed (uses "<kind>/<name>").
// Minor 2: host Cache (CachePut, CacheGet, CacheDelete, CacheConsume,
// CacheCount); the acme plugin kind served under /acme/.
// Minor 3: host StorageApply (host.Applier: several writes in one
// transaction and one round trip).
// Minor 4: host Gather (host.Gather: several independent reads and cache
// calls in one round trip).
// Minor 5: host StorageApplyAudited (host.AuditedApplier: storage writes
// and the audit event recording them in one transaction).
// Minor 6: ca IssueOnce (ca.OnceIssuer: at most one certificate under a
// caller's key, recorded in the issuance's transaction).
const ProtocolMinor = 6

// Plugin is what every plugin implements besides its kind's interface.
type Plugin interface {
	// Info says who the plugin is.
	Info() Info
	// ConfigSchema describes the plugin's `config { }` body. The host
	// decodes the operator's HCL against it and reports mistakes with their
	// file:line:col before the plugin ever sees them.
	ConfigSchema() config.Schema
	// Configure applies a configuration (JSON decoded by the host against
	// ConfigSchema; use config.Unmarshal) and hands over the host services.
	// Return a *ProblemsError to point at attributes. It may be called
	// again on reload; a failed Configure must leave the previous
	// configuration in force.
	Configure(ctx context.Context, req *ConfigureRequest) error
}

// Info identifies a plugin implementation.
type Info struct {
	Name     string            // e.g. "kms-soft"
	Version  string            // e.g. "0.1.0"
	Metadata map[string]string // free-form facts shown by the host
}

// ConfigureRequest is what Configure receives.
type ConfigureRequest struct {
	Config   []byte    // JSON object decoded against ConfigSchema
	Host     host.Host // the core's services for this plugin instance
	DataDir  string    // a directory owned by this plugin instance alone
	Instance string    // "<kind>.<name>" as the operator named it
}

// ConfigValidator is an optional capability: semantic checks on a decoded
// configuration beyond what the schema expresses, run by
// `avon config validate` without applying anything.
type ConfigValidator interface {
	ValidateConfig(ctx context.Context, config []byte) []Problem
}

// HealthChecker is an optional capability: a health check run on every
// host health ping. Without it a plugin that answers is healthy.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Problem is a mistake in a plugin's configuration.
type Problem struct {
	Attribute string // top-level attribute, "" for the body as a whole
	Summary   string
	Detail    string
}

// ProblemsError carries configuration problems out of Configure.
type ProblemsError struct{ Problems []Problem }

func (e *ProblemsError) Error() string {
	var b strings.Builder
	b.WriteString("invalid plugin configuration")
	for _, p := range e.Problems {
		b.WriteString("; ")
		if p.Attribute != "" {
			b.WriteString(p.Attribute + ": ")
		}
		b.WriteString(p.Summary)
	}
	return b.String()
}

// KMSPlugin is a kms plugin.
type KMSPlugin interface {
	Plugin
	kms.KMS
}

// PQCPlugin is a pqc plugin.
type PQCPlugin interface {
	Plugin
	pqc.Provider
}

// CAPlugin is a ca plugin.
type CAPlugin interface {
	Plugin
	ca.CA
}

// ACMEPlugin is an acme plugin.
type ACMEPlugin interface {
	Plugin
	acme.Server
}

// PolicyPlugin is a policy plugin.
type PolicyPlugin interface {
	Plugin
	policy.Engine
}

func problemsOf(err error) []Problem {
	if err == nil {
		return nil
	}
	var pe *ProblemsError
	if errors.As(err, &pe) && len(pe.Problems) > 0 {
		return pe.Problems
	}
	return []Problem{{Summary: err.Error()}}
}
