package calibration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// CheckTimestamp rejects a claimed time more than MaxSkew from calibrated
// now with a *SkewError ("timestamp is 7.2s ahead of calibrated time
// (limit 5s)"). Without a fresh calibration it fails closed with
// ErrNotCalibrated or *StaleError.
func (c *Calibrator) CheckTimestamp(claimed time.Time) error {
	now, err := c.Now()
	if err != nil {
		return err
	}
	skew := claimed.Round(0).Sub(now)
	if skew > c.cfg.MaxSkew || skew < -c.cfg.MaxSkew {
		return &SkewError{What: "timestamp", Claimed: claimed, Now: now, Skew: skew, Limit: c.cfg.MaxSkew}
	}
	return nil
}

// CheckAttestation parses and checks an encoded attestation; see
// OpenAttestation.
func (c *Calibrator) CheckAttestation(b []byte, v Verifier) error {
	_, err := c.OpenAttestation(b, v)
	return err
}

// OpenAttestation parses an encoded attestation and checks it against this
// core's calibrated time, returning it when it passes. Reasons, in the
// order checked: no fresh calibration here (ErrNotCalibrated, ErrStale);
// malformed or unknown version (ErrMalformed, ErrUnsupportedVersion);
// issued under a calibration older than MaxAge (ErrStale); dated more than
// MaxSkew ahead (ErrSkew); past its expiry or older than MaxAge
// (ErrExpired); signature (ErrBadSignature).
func (c *Calibrator) OpenAttestation(b []byte, v Verifier) (*Attestation, error) {
	now, err := c.Now()
	if err != nil {
		return nil, err
	}
	att, err := ParseAttestation(b)
	if err != nil {
		return nil, err
	}
	if att.Age > c.cfg.MaxAge {
		return nil, &StaleError{What: "attestation's calibration", Age: att.Age, MaxAge: c.cfg.MaxAge}
	}
	if old := att.Time.Add(c.cfg.MaxAge); now.After(old) && old.Before(att.Expiry) {
		return nil, &ExpiredError{Expiry: old, Now: now, Reason: "exceeded max age"}
	}
	if err := VerifyAttestation(att, v, now, c.cfg.MaxSkew); err != nil {
		return nil, err
	}
	return att, nil
}

// Request headers the middleware checks.
const (
	// HeaderTimestamp carries the sender's time in RFC 3339 with an
	// optional fraction of a second ("2026-12-02T07:34:05.123Z").
	HeaderTimestamp = "Avon-Timestamp"
	// HeaderAttestation carries Attestation.Marshal in unpadded base64url
	// (RFC 4648 section 5).
	HeaderAttestation = "Avon-Time-Attestation"
)

// Problem types (RFC 9457) the middleware answers with.
const (
	ProblemStale       = "urn:avon:problem:calibration-stale"
	ProblemMalformed   = "urn:avon:problem:time-malformed"
	ProblemSkew        = "urn:avon:problem:time-skew"
	ProblemExpired     = "urn:avon:problem:time-attestation-expired"
	ProblemAttStale    = "urn:avon:problem:time-attestation-stale"
	ProblemBadSig      = "urn:avon:problem:time-attestation-signature"
	ProblemUnsupported = "urn:avon:problem:time-attestation-version"
)

// DefaultExempt are the paths a Guard never checks: probes and metrics
// must stay reachable when the clock is stale.
var DefaultExempt = []string{"/healthz", "/readyz", "/metrics"}

// Guard applies the calibration to HTTP requests. Build it with NewGuard.
type Guard struct {
	cal           *Calibrator
	verifier      Verifier
	exempt        map[string]bool
	timeDependent func(*http.Request) bool
}

// GuardOption configures a Guard.
type GuardOption func(*Guard)

// WithVerifier sets the verifier for HeaderAttestation; without one a
// request carrying the header is refused.
func WithVerifier(v Verifier) GuardOption { return func(g *Guard) { g.verifier = v } }

// WithExempt replaces DefaultExempt: requests to exactly these paths pass
// through unchecked.
func WithExempt(paths ...string) GuardOption {
	return func(g *Guard) {
		g.exempt = map[string]bool{}
		for _, p := range paths {
			g.exempt[p] = true
		}
	}
}

// WithTimeDependent decides which requests need a fresh calibration even
// when they carry no time header (default: every request not exempt).
func WithTimeDependent(f func(*http.Request) bool) GuardOption {
	return func(g *Guard) { g.timeDependent = f }
}

// NewGuard returns the guard every request path of the core goes through.
func NewGuard(c *Calibrator, opts ...GuardOption) *Guard {
	g := &Guard{cal: c}
	WithExempt(DefaultExempt...)(g)
	for _, o := range opts {
		o(g)
	}
	return g
}

// CheckTimestamp is Calibrator.CheckTimestamp.
func (g *Guard) CheckTimestamp(claimed time.Time) error { return g.cal.CheckTimestamp(claimed) }

// CheckAttestation is Calibrator.CheckAttestation with the guard's verifier.
func (g *Guard) CheckAttestation(b []byte) error { return g.cal.CheckAttestation(b, g.verifier) }

type attestationKey struct{}

// AttestationFrom returns the attestation the middleware verified for this
// request, if the request carried one.
func AttestationFrom(ctx context.Context) (*Attestation, bool) {
	a, ok := ctx.Value(attestationKey{}).(*Attestation)
	return a, ok
}

// Middleware refuses, with an RFC 9457 problem document:
//   - 503 when the route is time-dependent (or carries a time header) and
//     the core's own calibration is missing or older than MaxAge;
//   - 400 for a malformed HeaderTimestamp or HeaderAttestation;
//   - 401 for a timestamp skewed past MaxSkew, or an attestation that is
//     stale, future-dated, expired or badly signed.
//
// Exempt paths pass through untouched. A verified attestation is available
// to next through AttestationFrom.
func (g *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.exempt[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		ts, hasTS := r.Header[HeaderTimestamp]
		at, hasAt := r.Header[HeaderAttestation]
		if hasTS || hasAt || g.timeDependent == nil || g.timeDependent(r) {
			if _, err := g.cal.Now(); err != nil {
				writeProblem(w, http.StatusServiceUnavailable, ProblemStale, "Clock calibration unavailable", "time-dependent request refused: "+err.Error())
				return
			}
		}
		if hasTS {
			if len(ts) != 1 {
				writeProblem(w, http.StatusBadRequest, ProblemMalformed, "Malformed timestamp", HeaderTimestamp+" given more than once")
				return
			}
			t, err := time.Parse(time.RFC3339Nano, ts[0])
			if err != nil {
				writeProblem(w, http.StatusBadRequest, ProblemMalformed, "Malformed timestamp", HeaderTimestamp+" is not RFC 3339")
				return
			}
			if err := g.cal.CheckTimestamp(t); err != nil {
				writeError(w, err)
				return
			}
		}
		if hasAt {
			att, err := g.openHeader(at)
			if err != nil {
				writeError(w, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), attestationKey{}, att))
		}
		next.ServeHTTP(w, r)
	})
}

func (g *Guard) openHeader(vals []string) (*Attestation, error) {
	if len(vals) != 1 {
		return nil, &FormatError{Field: HeaderAttestation, Reason: "given more than once"}
	}
	if len(vals[0]) > base64.RawURLEncoding.EncodedLen(MaxAttestationLen) {
		return nil, &FormatError{Field: HeaderAttestation, Reason: "too long"}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimSpace(vals[0]))
	if err != nil {
		return nil, &FormatError{Field: HeaderAttestation, Reason: "not unpadded base64url"}
	}
	if g.verifier == nil {
		return nil, errors.New("time attestations are not accepted on this listener")
	}
	return g.cal.OpenAttestation(b, g.verifier)
}

// writeError maps an error of this package to a problem response.
func writeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotCalibrated):
		writeProblem(w, http.StatusServiceUnavailable, ProblemStale, "Clock calibration unavailable", err.Error())
	case errors.Is(err, ErrUnsupportedVersion):
		writeProblem(w, http.StatusBadRequest, ProblemUnsupported, "Unsupported time attestation version", err.Error())
	case errors.Is(err, ErrMalformed):
		writeProblem(w, http.StatusBadRequest, ProblemMalformed, "Malformed time header", err.Error())
	case errors.Is(err, ErrSkew):
		writeProblem(w, http.StatusUnauthorized, ProblemSkew, "Time skew beyond limit", err.Error())
	case errors.Is(err, ErrStale):
		var se *StaleError
		if errors.As(err, &se) && se.What != "" {
			writeProblem(w, http.StatusUnauthorized, ProblemAttStale, "Time attestation issued under a stale calibration", err.Error())
			return
		}
		writeProblem(w, http.StatusServiceUnavailable, ProblemStale, "Clock calibration unavailable", err.Error())
	case errors.Is(err, ErrExpired):
		writeProblem(w, http.StatusUnauthorized, ProblemExpired, "Time attestation expired", err.Error())
	case errors.Is(err, ErrBadSignature):
		writeProblem(w, http.StatusUnauthorized, ProblemBadSig, "Time attestation signature invalid", err.Error())
	default:
		writeProblem(w, http.StatusUnauthorized, ProblemBadSig, "Time attestation refused", err.Error())
	}
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, typ, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Type: typ, Title: title, Status: status, Detail: detail})
}
