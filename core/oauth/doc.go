// Package oauth is the core's OAuth 2.1 authorization server for operators
// and the verifier of the access tokens it issues.
//
// # Users
//
// Local users live in the store under oauth/user/<name>: roles (admin,
// operator, auditor — each also the OAuth scope of that name; admin holds
// every scope), an Argon2id password hash with its parameters in the hash
// (PHC string, so a raised cost applies to new passwords while old hashes
// keep verifying), and an optional TOTP secret (RFC 6238: SHA-1, 6 digits,
// 30 s, ±1 step) with the last accepted time step, advanced by a
// compare-and-set so a code is never accepted twice, on any replica.
// Password checks compare in constant time, and an unknown or disabled
// user costs one Argon2id of a dummy hash made with the current
// parameters, so response time does not reveal which names exist. Logins
// are throttled per user name and per source address with cache counters
// (which fail open, as every rate limit does: the password still holds).
//
// # Flow
//
// Authorization code with PKCE (S256 only: a missing challenge or "plain"
// is refused) for registered public clients. The CLI (client "avon-cli")
// redirects to a loopback listener, http://127.0.0.1:<any port>/callback or
// http://[::1]:<any port>/callback (RFC 8252 section 7.3); other clients
// have exact redirect URIs. GET /oauth/authorize checks the request and
// renders a login form whose CSRF token is both a __Host- cookie and a
// hidden field, with the checked request kept server side in the cache
// under that token (single use, 10 minutes): the form cannot change the
// client, redirect or challenge. A successful login stores an
// authorization code in the cache (60 s) bound to the client, redirect URI,
// challenge, user and scope; POST /oauth/token consumes it atomically
// before checking anything, so a code works once, and a code presented by
// another client, with another redirect URI or a wrong verifier is spent
// for nothing.
//
// # Tokens
//
// Access tokens are JWTs (RFC 9068, typ at+jwt) living 5 minutes by
// default, signed through Signer with a KMS key: ML-DSA-65 with JOSE alg
// "ML-DSA-65" (RFC 9964, JWK kty "AKP") by default, or Ed25519 ("EdDSA").
// kid names the KMS key and version; /oauth/jwks.json publishes every
// version. A verifier looks the key up by kid and uses the algorithm that
// key is fixed to: the token's alg must agree and never chooses (so "none"
// and HS256-with-the-public-key are refused before any cryptography). The
// header may hold only alg, kid and typ. exp is strict; nbf and iat may be
// up to the calibration's max_skew ahead of calibrated time; without a
// fresh calibration nothing is verified (fail closed).
//
// Refresh tokens are opaque ("avon-rt-v1." + 32 random bytes), stored only
// as their SHA-256 under oauth/refresh/<hash>, and rotate on every use. A
// login is a grant (oauth/grant/<id>, the access tokens' sid): spending a
// refresh token, bumping the grant's generation and storing the next token
// is one atomic store batch, so of concurrent spends one wins. Presenting a
// refresh token that was already rotated revokes the whole grant: the
// current refresh token and every access token issued under it (the
// middleware checks the grant on every request). RFC 7009 revocation of
// either kind of token revokes its grant. A grant lives refresh_ttl from
// login at most.
//
// # Audit
//
// Every login success and failure, token issue (and refused exchange),
// refresh token reuse and revocation is an audit event. Success is
// recorded before the code or token exists; when it cannot be recorded
// nothing is issued (fail closed).
//
// The package must not read configuration, open listeners or hold private
// keys: the server wiring gives it the store, the cache, the DRBG, the
// calibrated clock, the KMS signer and the audit log, and mounts its
// handlers on the API listener.
package oauth
