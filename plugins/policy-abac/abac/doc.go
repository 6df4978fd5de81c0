// Package abac is the decision engine of the policy-abac plugin: Cedar
// policy sets compiled against a schema (AVON's own by default, see
// avon.cedarschema and docs/policy.md), and batched, explained decisions.
//
// Compile parses and validates a policy set; it returns Diagnostics with
// the policy id, line and column of each problem and no Set when any is an
// error, so an invalid set can never be installed. A compiled Set is
// immutable and safe for concurrent use; Evaluate converts the core's JSON
// entities and context into Cedar values guided by the schema (ipaddr and
// datetime from strings, integers only for Long, no unknown or duplicate
// keys) and decides each query. A set caches what it converted: the
// entities batches bring, and each top-level context member by its bytes,
// so that the flows of one session pay only for their destination; a
// large batch is decided on every core.
//
// The package does no I/O and keeps no clock: time comes in as an argument.
// Storage, audit and configuration belong to the plugin (abacplugin).
package abac
