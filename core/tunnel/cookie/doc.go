// Package cookie implements the AVON tunnel's address proofs: the mac1 and
// mac2 fields of an Initiation, CookieReply messages (type 5) and address
// tokens.
//
// mac1 (the last 32..16 bytes of an Initiation) is an HMAC-SHA-256, cut to
// 16 bytes, over everything before it, keyed with SHA-256("avon-v1 mac1" ||
// responder_id): a cheap check that the sender knows which gateway it talks
// to. mac2 (the last 16 bytes) is an HMAC over everything before it keyed
// with a cookie, or zeros when the initiator holds none.
//
// A cookie is HMAC-SHA-256(secret, src IP (16 bytes, v4-mapped) || src port)
// cut to 16 bytes, where the secret is random and replaced every 120 s; the
// responder accepts the current and the previous secret, so a cookie stays
// usable for 120 s after it was sent (the initiator drops it after 120 s).
// The responder sends it in a 64-byte CookieReply:
//
//	type 5 | version 1 | reserved [2] | receiver_index u32 | nonce [24] |
//	XChaCha20-Poly1305(SHA-256("avon-v1 cookie" || responder_id), nonce,
//	                   cookie, ad = mac1 of the initiation)
//
// An address token, issued inside an established tunnel, proves the address
// on a later reconnect without the cookie round trip. It is 64 bytes,
//
//	nonce [24] | XChaCha20-Poly1305(token key, nonce,
//	                                IP (16, v4-mapped) || expiry unix s i64,
//	                                ad = "avon-v1 token" || responder_id)
//
// valid 24 h and bound to the IP, not the port. The token key is drawn at
// NewChecker and never leaves the process: tokens do not survive a restart
// and are not shared between gateways (a reconnect then pays one cookie
// round trip).
//
// The package is pure: time and randomness are inputs, it does no I/O and
// starts no goroutines. It decides only whether bytes prove an address; the
// gateway decides when proof is required (under load, before replies larger
// than 3x the request, before per-source state). All MAC and tag
// comparisons are constant time.
package cookie
