// Package calibration makes time a verified input of the core. It keeps
// the core's calibration (how far the local clock is from trusted time,
// how sure that is, and how long ago it was confirmed), fails
// time-dependent decisions closed when that knowledge is stale, issues
// signed time attestations that agents and plugins present back, and
// guards every request path against skewed timestamps and bad
// attestations.
//
// It must not read configuration, open listeners or hold signing keys:
// the server builds the Config, mounts the middleware and supplies a
// Signer backed by a KMS plugin.
//
// # Model
//
// A Source measures a Sample: Offset (true time minus the local wall
// clock) and Uncertainty (a bound on the error of Offset: half the round
// trip plus the server's own dispersion). A calibration round samples every
// source and keeps one sample, anchored at a local clock reading taken when
// the round ends. From then on the calibrated time is
//
//	calibrated(now) = (anchor wall + Offset) + (now - anchor)
//
// where now - anchor is measured on the monotonic clock, so it is the
// calibration's Age. A step of the local wall clock between rounds (NTP,
// `date -s`) therefore moves neither the calibrated time nor the age; it
// shows up as LocalSkew (local wall minus calibrated time) at once, and in
// the measured Offset at the next round. The uncertainty of the calibrated
// time is the sample's plus Age*DriftBound (100 ppm).
//
// # Combination rule
//
// Two samples agree when their intervals [Offset-Uncertainty,
// Offset+Uncertainty] overlap. The sample that agrees with the most other
// samples wins; ties go to the lower uncertainty, then to the source listed
// first. A lone precise falseticker thus loses to two agreeing sources;
// with one or two sources the rule is "lowest uncertainty". Sources that
// fail are recorded (Status.Sources) and left out.
//
// # Failure semantics
//
//   - Before the first good round, Now, Attest, CheckTimestamp and the
//     middleware fail with ErrNotCalibrated; Ready fails.
//   - A round with no usable sample keeps the previous calibration, which
//     keeps ageing. Once Age > MaxAge they fail with *StaleError (ErrStale),
//     and Ready reports the age and every source's last error. The next
//     good round restores service; nothing latches.
//   - When |LocalSkew| > MaxSkew the core's own wall clock is wrong: Ready
//     fails with a *SkewError saying by how much and in which direction.
//     Now keeps returning calibrated time, which does not depend on the
//     wall clock, so peers with correct clocks are not locked out. With
//     SystemSource (which trusts the wall clock) the next round adopts the
//     stepped clock; with an external source Ready recovers when the host
//     clock is corrected.
//   - A claimed time farther than MaxSkew from calibrated time is refused
//     with a *SkewError ("timestamp is 7.2s ahead of calibrated time (limit
//     5s)").
//
// # Attestation format, version 1
//
// All integers are big-endian; lengths count bytes.
//
//	offset  size  field
//	0       1     version = 1
//	1       1     A = algorithm name length, 1..64
//	2       A     algorithm name, printable ASCII (0x21..0x7e), e.g. "ML-DSA-65"
//	2+A     1     K = key id length, 1..255
//	3+A     K     issuer key id, printable ASCII
//	3+A+K   2     S = subject length, 0..1024
//	5+A+K   S     subject, UTF-8
//	then    8     time: calibrated time at issue, int64 ns since 1970-01-01 UTC
//	        8     uncertainty of time, int64 ns, >= 0
//	        8     age of the issuer's calibration at issue, int64 ns, >= 0
//	        8     expiry: time + issuer's MaxAge, int64 ns since the epoch, > time
//	        1     N = nonce length, 0..64
//	        N     nonce
//	        2     G = signature length, 1..65535
//	        G     signature
//
// The signature covers SignaturePrefix ("AVON-TIME-ATTESTATION-v1" and one
// zero byte) followed by every byte before the signature length. A parser
// rejects any other version, a length out of range, a field rule broken,
// truncation and trailing bytes, so each attestation has exactly one
// encoding. Over HTTP it travels in the Avon-Time-Attestation header as
// unpadded base64url; a plain timestamp travels in Avon-Timestamp as RFC
// 3339 with an optional fraction of a second.
//
// An attestation is accepted when it is well formed, its issuer's
// calibration was at most MaxAge old (else ErrStale), its time is at most
// MaxSkew ahead of this core's calibrated time (else ErrSkew), it is
// neither past its expiry nor older than MaxAge (else ErrExpired), and its
// signature verifies (else ErrBadSignature).
package calibration
