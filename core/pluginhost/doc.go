// Package pluginhost is the only package of the core that touches go-plugin.
// It starts plugin binaries (gRPC only, AutoMTLS, SHA-256 pinned), serves
// them the host services over the broker, re-logs their stderr under
// plugin.<kind>.<name>, pings their health, restarts crashed ones with
// exponential backoff, and gives the rest of the core stable typed clients
// whose calls fail fast with ErrUnavailable while a plugin is down.
//
// The host services confine each plugin's storage to its namespace; a
// plugin's audited storage batch (host StorageApplyAudited) reaches the
// audit log as root-store ops through AuditBatcher, checked and prefixed by
// the namespace exactly as its plain batches are.
//
// Lifecycle: New -> Add (each spec) -> Launch (processes up; info and config
// schema read) -> decode each plugin's config against its schema (the caller,
// with core/config) -> SetConfig -> Configure (dependencies first; starts the
// supervisors) -> ... -> Stop (dependents first; no process left behind).
//
// It must not decide policy: what to do with a plugin's answers is the
// caller's business.
package pluginhost
