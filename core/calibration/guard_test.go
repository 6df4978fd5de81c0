package calibration_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
)

func TestCheckTimestamp(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	now := f.now(t)
	cases := []struct {
		claimed time.Time
		msg     string // "" = accepted
	}{
		{now, ""},
		{now.Add(5 * time.Second), ""},
		{now.Add(-5 * time.Second), ""},
		{now.Add(7200 * time.Millisecond), "timestamp is 7.2s ahead of calibrated time (limit 5s)"},
		{now.Add(-5001 * time.Millisecond), "timestamp is 5.001s behind calibrated time (limit 5s)"},
		{now.Add(-90 * time.Minute), "timestamp is 1h30m0s behind calibrated time (limit 5s)"},
		{now.Add(7 * time.Second).In(time.FixedZone("X", 3600)), "timestamp is 7s ahead of calibrated time (limit 5s)"},
	}
	for _, tc := range cases {
		err := f.cal.CheckTimestamp(tc.claimed)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%s refused: %v", tc.claimed, err)
			}
			continue
		}
		var se *calibration.SkewError
		if !errors.As(err, &se) || !errors.Is(err, calibration.ErrSkew) || err.Error() != tc.msg {
			t.Errorf("%s: error %v, want %q", tc.claimed, err, tc.msg)
			continue
		}
		if se.Limit != 5*time.Second || !se.Now.Equal(now) || !se.Claimed.Equal(tc.claimed) {
			t.Errorf("SkewError fields %+v", se)
		}
	}
	f.clock.Advance(31 * time.Second)
	wantIs(t, f.cal.CheckTimestamp(f.trueNow()), calibration.ErrStale)
}

type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// guardServer serves the guard in front of a handler on a real listener.
func guardServer(t *testing.T, f *fixture, opts ...calibration.GuardOption) *httptest.Server {
	t.Helper()
	g := calibration.NewGuard(f.cal, append([]calibration.GuardOption{calibration.WithVerifier(f.key)}, opts...)...)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if a, ok := calibration.AttestationFrom(r.Context()); ok {
			io.WriteString(w, "attested:"+a.Subject)
			return
		}
		io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(g.Middleware(mux))
	t.Cleanup(srv.Close)
	return srv
}

type reply struct {
	status int
	body   string
	prob   problemDoc
}

func get(t *testing.T, srv *httptest.Server, path string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, body: string(body)}
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s: content type %q", path, ct)
		}
		if err := json.Unmarshal(body, &r.prob); err != nil {
			t.Fatalf("%s: problem body %q: %v", path, body, err)
		}
		if r.prob.Status != resp.StatusCode || r.prob.Type == "" || r.prob.Title == "" || r.prob.Detail == "" {
			t.Fatalf("%s: incomplete problem %+v", path, r.prob)
		}
	}
	return r
}

func TestMiddlewareStaleCalibration(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	srv := guardServer(t, f)
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := get(t, srv, p, nil); r.status != 200 {
			t.Fatalf("exempt %s: %d %s", p, r.status, r.body)
		}
	}
	r := get(t, srv, "/v1/agents", nil)
	if r.status != 503 || r.prob.Type != calibration.ProblemStale || !strings.Contains(r.prob.Detail, "clock not calibrated") {
		t.Fatalf("uncalibrated: %d %+v", r.status, r.prob)
	}
	f.calibrate(t)
	if r := get(t, srv, "/v1/agents", nil); r.status != 200 || r.body != "ok" {
		t.Fatalf("calibrated: %d %s", r.status, r.body)
	}
	f.clock.Advance(45 * time.Second)
	r = get(t, srv, "/v1/agents", nil)
	if r.status != 503 || r.prob.Detail != "time-dependent request refused: clock calibration is 45s old (max age 30s)" {
		t.Fatalf("stale: %d %+v", r.status, r.prob)
	}
	f.calibrate(t)
	if r := get(t, srv, "/v1/agents", nil); r.status != 200 {
		t.Fatalf("recalibrated: %d %s", r.status, r.body)
	}
}

func TestMiddlewareTimeDependentRoutes(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	srv := guardServer(t, f,
		calibration.WithExempt("/live"),
		calibration.WithTimeDependent(func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v1/") }))
	if r := get(t, srv, "/docs", nil); r.status != 200 {
		t.Fatalf("time-independent route while uncalibrated: %d", r.status)
	}
	if r := get(t, srv, "/v1/x", nil); r.status != 503 {
		t.Fatalf("time-dependent route while uncalibrated: %d", r.status)
	}
	// A time header cannot be checked without calibration: refused anywhere.
	if r := get(t, srv, "/docs", map[string]string{calibration.HeaderTimestamp: t0.Format(time.RFC3339Nano)}); r.status != 503 {
		t.Fatalf("timestamp on a time-independent route while uncalibrated: %d", r.status)
	}
	// WithExempt replaces the defaults.
	if r := get(t, srv, "/live", map[string]string{calibration.HeaderTimestamp: "garbage"}); r.status != 200 {
		t.Fatalf("exempt /live: %d", r.status)
	}
	if r := get(t, srv, "/healthz", map[string]string{calibration.HeaderTimestamp: "garbage"}); r.status != 503 {
		t.Fatalf("/healthz no longer exempt: %d", r.status)
	}
}

func TestMiddlewareTimestampHeader(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	srv := guardServer(t, f)
	now := f.now(t)
	cases := []struct {
		val    string
		status int
		typ    string
		detail string
	}{
		{now.Format(time.RFC3339Nano), 200, "", ""},
		{now.Add(-3 * time.Second).Format(time.RFC3339), 200, "", ""},
		{now.Add(7200 * time.Millisecond).Format(time.RFC3339Nano), 401, calibration.ProblemSkew, "timestamp is 7.2s ahead of calibrated time (limit 5s)"},
		{now.Add(-time.Hour).In(time.FixedZone("", -5*3600)).Format(time.RFC3339Nano), 401, calibration.ProblemSkew, "timestamp is 1h0m0s behind calibrated time (limit 5s)"},
		{strconv.FormatInt(now.Unix(), 10), 400, calibration.ProblemMalformed, "Avon-Timestamp is not RFC 3339"},
		{"", 400, calibration.ProblemMalformed, "Avon-Timestamp is not RFC 3339"},
	}
	for _, tc := range cases {
		r := get(t, srv, "/v1/pulse", map[string]string{calibration.HeaderTimestamp: tc.val})
		if r.status != tc.status || r.prob.Type != tc.typ || r.prob.Detail != tc.detail {
			t.Errorf("%q: %d %+v, want %d %s %q", tc.val, r.status, r.prob, tc.status, tc.typ, tc.detail)
		}
	}
}

func TestMiddlewareAttestationHeader(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	srv := guardServer(t, f)
	att, b := attest(t, f, "agent:7", []byte("nonce"))
	enc := base64.RawURLEncoding.EncodeToString
	hdr := func(v string) map[string]string { return map[string]string{calibration.HeaderAttestation: v} }

	if r := get(t, srv, "/v1/pulse", hdr(enc(b))); r.status != 200 || r.body != "attested:agent:7" {
		t.Fatalf("good attestation: %d %s %+v", r.status, r.body, r.prob)
	}
	tampered := bytes.Clone(b)
	tampered[len(tampered)-len(att.Signature)/2] ^= 1
	v2 := bytes.Clone(b)
	v2[0] = 2
	cases := []struct {
		name   string
		val    string
		status int
		typ    string
	}{
		{"tampered", enc(tampered), 401, calibration.ProblemBadSig},
		{"version 2", enc(v2), 400, calibration.ProblemUnsupported},
		{"padded base64", base64.URLEncoding.EncodeToString(b[:len(b)-1]), 400, calibration.ProblemMalformed},
		{"std base64 alphabet", strings.Repeat("+/", 40), 400, calibration.ProblemMalformed},
		{"truncated", enc(b[:len(b)-1]), 400, calibration.ProblemMalformed},
		{"too long", strings.Repeat("A", base64.RawURLEncoding.EncodedLen(calibration.MaxAttestationLen)+1), 400, calibration.ProblemMalformed},
	}
	for _, tc := range cases {
		r := get(t, srv, "/v1/pulse", hdr(tc.val))
		if r.status != tc.status || r.prob.Type != tc.typ {
			t.Errorf("%s: %d %+v, want %d %s", tc.name, r.status, r.prob, tc.status, tc.typ)
		}
	}

	f.clock.Advance(40 * time.Second)
	f.calibrate(t)
	r := get(t, srv, "/v1/pulse", hdr(enc(b)))
	if r.status != 401 || r.prob.Type != calibration.ProblemExpired || r.prob.Detail != "time attestation expired 10s ago" {
		t.Fatalf("expired: %d %+v", r.status, r.prob)
	}

	// Without a verifier the header is refused rather than ignored.
	plain := httptest.NewServer(calibration.NewGuard(f.cal).Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	t.Cleanup(plain.Close)
	_, b = attest(t, f, "s", nil)
	if r := get(t, plain, "/v1/pulse", hdr(enc(b))); r.status != 401 {
		t.Fatalf("no verifier: %d", r.status)
	}
}
