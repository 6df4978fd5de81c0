// Package handshake is the AVON tunnel handshake (protocol v1, see
// docs/protocol.md) as a pure state machine: message layouts with
// exact-length parsers, the key schedule, the agent's side (Initiator), the
// gateway's side (Responder, PendingHandshake), HandshakeError messages and
// the signature-free rekey.
//
// It must not do I/O, start goroutines or read a clock: time (the
// calibrated clock) and randomness come in through the configuration, so
// every run is reproducible from its inputs (testdata/vectors.json). It
// does not compute or check mac1/mac2, address tokens or cookies
// (core/tunnel/cookie), does not fragment (core/tunnel/frag), does not run
// transport or timers (core/tunnel), and does not decide policy
// (core/gateway).
//
// # Shape
//
//	agent                                   gateway
//	Initiator.Initiation(token) ── 1 ──▶    (cookie: mac1, mac2/token)
//	                                        Responder.HandleInitiation
//	                            ◀── 2 ──    Response (fragmented) + PendingHandshake
//	Initiator.HandleResponse    ── 3 ──▶    PendingHandshake.HandleFinish
//	  -> Finish, Result                       -> Result
//
// SIGMA-I: the gateway signs first (sig_r over thc), the agent reveals its
// certificate chain only inside enc_i, after it verified the gateway, so
// its identity is hidden from passive and active attackers alike.
//
// # Delegated handshake keys
//
// The gateway key agents pin stays in a KMS; it certifies a short-lived
// in-memory ML-DSA-65 key (IssueCredential, a Credential) and the responder
// signs sig_r with that (ResponderConfig.Delegated, DelegatedKeys). The
// Response carries the credential unless the Initiation's blinded hint
// names the one the agent already holds (InitiatorConfig.Credential,
// Result.Credential). docs/protocol.md §3.2.1.
//
// # Error contract
//
// Every error wraps one sentinel of errors.go. Parsers check every length
// before touching cryptography and never panic. A message that fails
// before its AEAD opened changes no state (a forgery cannot end a real
// handshake); CodeFor says which refusals the gateway answers with a
// HandshakeError and which it drops silently.
package handshake
