// Package adminapi is the framework of the core's Admin API (REST under
// /v1/): a route table in which every route declares the scope it needs,
// and the conventions every route follows without writing them again.
//
//   - Errors are RFC 9457 problem details (application/problem+json) whose
//     type URIs live under https://avon.dev/problems/; a handler returns an
//     error and the framework turns it into a problem (a *Problem as is,
//     anything else through Options.MapError, else 500).
//   - Callers are identified by an Authenticator, which also checks the
//     route's scope (admin:read or admin:write): today the unix socket's
//     peer credentials (PeerCredAuthenticator), later OAuth bearer tokens.
//     Authentication runs before anything else, body reading included.
//   - Lists page with ?page_size=&page_token=; tokens are opaque, bound to
//     the listing they came from, and parsed strictly (DecodePageToken).
//   - Resources with a stored version carry a strong ETag; routes marked
//     Conditional refuse a request without If-Match (428) before the
//     handler runs, and the handler refuses a stale one (412).
//   - Request bodies are bounded, must be application/json, and are decoded
//     strictly: one object, no duplicate or unknown fields, no trailing data.
//   - Every request gets an id (X-Request-Id, the caller's when well formed);
//     every route that changes state is audited with the caller before the
//     handler runs (fail closed: no audit, no change) and with its outcome.
//   - The OpenAPI 3.1 document is generated from the same table, so it
//     cannot drift from what is served (GET /v1/openapi.json).
//
// The package must not know any domain: agents, certificates and policies
// are the server's routes (core/server). It does no I/O besides the HTTP
// exchange it is given and the Auditor it is handed.
package adminapi
