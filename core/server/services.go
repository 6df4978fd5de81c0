package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/ntp"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/core/rng"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/sigverify"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// rngConfig maps the `rng` block onto the DRBG's configuration.
func rngConfig(c config.RNG) rng.Config {
	rc := rng.DefaultConfig()
	rc.DerivationFunction = c.DerivationFunction
	rc.PredictionResistance = c.PredictionResistance
	rc.ReseedInterval = c.ReseedInterval
	if c.ReseedBytes > 0 {
		rc.ReseedBytes = uint64(c.ReseedBytes)
	}
	rc.Personalization = []byte("avon core")
	return rc
}

// kmsEntropy offers a KMS plugin's generator (GenerateRandom) to the DRBG as
// an extra source. The DRBG draws while it holds a shard, so Read never
// waits on the plugin: it serves bytes fetched ahead in the background and
// fails at once when none are ready (the DRBG then seeds from the OS alone,
// which is always credited, and retries the source at the next reseed).
// Until the plugin host is up the source reports an error likewise.
type kmsEntropy struct {
	name string
	host func() *pluginhost.Host

	mu       sync.Mutex
	buf      []byte // fetched ahead; consumed bytes are zeroed
	fetching bool
	lastErr  error
}

// kmsEntropyAhead is how many bytes are kept fetched ahead: more than the
// start-up health tests draw at once (rng.StartupSamples).
const kmsEntropyAhead = 2 * rng.StartupSamples

func (k *kmsEntropy) Name() string { return "kms." + k.name }

func (k *kmsEntropy) Read(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.buf) > 0 { // a short read is fine: the DRBG reads again
		n := copy(p, k.buf)
		clear(k.buf[:n])
		k.buf = k.buf[n:]
		k.fetchLocked()
		return n, nil
	}
	k.fetchLocked()
	if k.lastErr != nil {
		return 0, k.lastErr
	}
	return 0, fmt.Errorf("kms.%s: no random bytes fetched yet", k.name)
}

// fetchLocked starts one background fetch when the buffer is low and none
// is running.
func (k *kmsEntropy) fetchLocked() {
	if k.fetching || len(k.buf) >= kmsEntropyAhead {
		return
	}
	k.fetching = true
	go func() {
		b, err := k.fetch(kmsEntropyAhead)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.fetching, k.lastErr = false, err
		if err == nil {
			old := k.buf
			k.buf = append(append(make([]byte, 0, len(old)+len(b)), old...), b...)
			clear(old)
		}
		clear(b)
	}()
}

func (k *kmsEntropy) fetch(n int) ([]byte, error) {
	h := k.host()
	if h == nil {
		return nil, errors.New("plugins not started yet")
	}
	inst, ok := h.Get(sdkplugin.Kind("kms"), k.name)
	if !ok {
		return nil, fmt.Errorf("no kms plugin %q", k.name)
	}
	rs, ok := inst.KMS().(kms.RandomSource)
	if !ok {
		return nil, fmt.Errorf("kms plugin %q offers no random source", k.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: n})
	if err != nil {
		return nil, fmt.Errorf("kms.%s: %w", k.name, err)
	}
	if len(r.Random) != n {
		return nil, fmt.Errorf("kms plugin %q returned %d random bytes, asked %d", k.name, len(r.Random), n)
	}
	return r.Random, nil
}

// kmsSigner signs with a KMS key (created as ML-DSA-65 when absent), for
// time attestations and audit checkpoints. The private key never leaves the
// plugin; the public key of each version is cached.
type kmsSigner struct {
	plugin string
	id     string
	inst   *pluginhost.Instance

	mu      sync.Mutex
	version int
	alg     kms.Algorithm
	pubs    map[int][]byte
}

func newKMSSigner(ctx context.Context, h *pluginhost.Host, plugin, id, purpose string) (*kmsSigner, error) {
	inst, ok := h.Get(sdkplugin.Kind("kms"), plugin)
	if !ok {
		return nil, fmt.Errorf("%s key: no running kms plugin %q", purpose, plugin)
	}
	s := &kmsSigner{plugin: plugin, id: id, inst: inst, pubs: map[int][]byte{}}
	c := inst.KMS()
	resp, err := c.GetKey(ctx, &kms.GetKeyRequest{ID: id})
	if errors.Is(err, kms.ErrKeyNotFound) {
		var g *kms.GenerateKeyResponse
		g, err = c.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: kms.MLDSA65,
			Labels: map[string]string{"avon.purpose": purpose}})
		if errors.Is(err, kms.ErrKeyExists) { // another replica made it meanwhile
			resp, err = c.GetKey(ctx, &kms.GetKeyRequest{ID: id})
		} else if err == nil {
			resp = &kms.GetKeyResponse{Key: g.Key}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s key %s in kms.%s: %w", purpose, id, plugin, err)
	}
	if p, _ := kms.PurposeOf(resp.Key.Algorithm); p != kms.PurposeSign {
		return nil, fmt.Errorf("%s key %s in kms.%s is %s, not a signing key", purpose, id, plugin, resp.Key.Algorithm)
	}
	s.setKey(resp.Key)
	if _, _, pub := s.current(); pub == nil {
		return nil, fmt.Errorf("%s key %s in kms.%s has no public key for its primary version %d", purpose, id, plugin, resp.Key.PrimaryVersion)
	}
	return s, nil
}

func (s *kmsSigner) setKey(k *kms.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version, s.alg = k.PrimaryVersion, k.Algorithm
	for _, v := range k.Versions {
		if len(v.PublicKey) > 0 {
			s.pubs[v.Version] = v.PublicKey
		}
	}
}

func (s *kmsSigner) current() (int, kms.Algorithm, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, s.alg, s.pubs[s.version]
}

func (s *kmsSigner) keyID(version int) string {
	return fmt.Sprintf("kms.%s/%s/v%d", s.plugin, s.id, version)
}

// sign signs msg with the primary version. When the key was rotated since
// it was last read, the metadata is refreshed and the caller told, since
// it named the old version in what it signed.
func (s *kmsSigner) sign(ctx context.Context, msg []byte) ([]byte, int, error) {
	return s.signWithContext(ctx, msg, nil)
}

// signWithContext is sign with an ML-DSA context string (FIPS 204 pure
// mode; the KMS plugin refuses one for algorithms without contexts).
func (s *kmsSigner) signWithContext(ctx context.Context, msg, sigCtx []byte) ([]byte, int, error) {
	resp, err := s.inst.KMS().Sign(ctx, &kms.SignRequest{ID: s.id, Message: msg, Context: sigCtx})
	if err != nil {
		return nil, 0, fmt.Errorf("sign with kms.%s/%s: %w", s.plugin, s.id, err)
	}
	if v, _, _ := s.current(); resp.Version != v {
		if k, err := s.inst.KMS().GetKey(ctx, &kms.GetKeyRequest{ID: s.id}); err == nil {
			s.setKey(k.Key)
		}
		return nil, resp.Version, fmt.Errorf("kms.%s/%s rotated to version %d while signing; retry", s.plugin, s.id, resp.Version)
	}
	return resp.Signature, resp.Version, nil
}

// timeSigner adapts kmsSigner to calibration.Signer.
type timeSigner struct{ *kmsSigner }

func (t timeSigner) Algorithm() string { _, a, _ := t.current(); return string(a) }
func (t timeSigner) KeyID() string     { v, _, _ := t.current(); return t.keyID(v) }
func (t timeSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sig, _, err := t.sign(ctx, msg)
	return sig, err
}

// Verify implements calibration.Verifier for attestations this core's key
// signed (any version it has seen).
func (t timeSigner) Verify(keyID string, msg, sig []byte) error {
	t.mu.Lock()
	var pub []byte
	for v, p := range t.pubs {
		if t.keyID(v) == keyID {
			pub = p
		}
	}
	alg := t.alg
	t.mu.Unlock()
	if pub == nil {
		return fmt.Errorf("attestation key %q is not one of this core's: %w", keyID, sigverify.ErrBadKey)
	}
	return sigverify.Verify(string(alg), pub, msg, nil, sig)
}

// auditSigner adapts kmsSigner to audit.Signer.
type auditSigner struct{ *kmsSigner }

func (a auditSigner) publicKey(v int) audit.PublicKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	return audit.PublicKey{KeyID: a.keyID(v), Algorithm: string(a.alg), PublicKey: a.pubs[v]}
}

func (a auditSigner) Key(ctx context.Context) (audit.PublicKey, error) {
	v, _, pub := a.current()
	if pub == nil {
		return audit.PublicKey{}, fmt.Errorf("kms.%s/%s: no public key for version %d", a.plugin, a.id, v)
	}
	return a.publicKey(v), nil
}

func (a auditSigner) Sign(ctx context.Context, msg []byte) ([]byte, audit.PublicKey, error) {
	sig, v, err := a.sign(ctx, msg)
	if err != nil {
		return nil, audit.PublicKey{}, err
	}
	return sig, a.publicKey(v), nil
}

// openCache opens the cache the configuration names.
func openCache(ctx context.Context, c config.Cache, log hclog.Logger) (cache.Cache, error) {
	switch c.Type {
	case "", "memory":
		return memcache.New(memcache.Options{}), nil
	case "redis":
		opts := redis.Options{Addr: c.Addr, Username: c.Username, Password: c.Password, DB: c.DB, KeyPrefix: c.KeyPrefix,
			DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout}
		if c.TLS {
			opts.TLS = redisTLS(c.Addr)
		}
		rc, err := redis.Open(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("open cache: %w", err)
		}
		log.Info("cache connected", "type", "redis", "addr", c.Addr)
		return rc, nil
	}
	return nil, fmt.Errorf("cache %q is not available in this build", c.Type)
}

// redisTLS is the client TLS configuration for a Redis server at addr:
// the system roots, the host name checked.
func redisTLS(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
}

// TimeSources builds the calibration sources of the configuration (the
// CLI calibrates with the same sources as the core).
func TimeSources(c config.Calibration, rand io.Reader) ([]calibration.Source, error) {
	var out []calibration.Source
	for _, s := range c.Sources {
		switch s.Type {
		case "system":
			out = append(out, calibration.SystemSource{Uncertainty: s.Uncertainty})
		case "ntp":
			src, err := ntp.New(s.Server, ntp.WithSamples(s.Samples), ntp.WithQueryTimeout(s.Timeout), ntp.WithRand(rand))
			if err != nil {
				return nil, fmt.Errorf("calibration source ntp %s: %w", s.Server, err)
			}
			out = append(out, src)
		default:
			return nil, fmt.Errorf("calibration source %q is not available in this build", s.Type)
		}
	}
	return out, nil
}

// registerServiceMetrics publishes the health of the RNG, calibration,
// audit log and cache on /metrics.
func (s *Server) registerServiceMetrics() {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	var cs []prometheus.Collector
	if s.rng != nil {
		cs = append(cs,
			gauge("avon_rng_healthy", "1 when the core DRBG passes its health tests and serves bytes.", func() float64 { return b(s.rng.Health().OK) }),
			gauge("avon_rng_reseeds", "Reseeds of the core DRBG since start (all shards).", func() float64 { return float64(s.rng.Health().Reseeds) }),
			gauge("avon_rng_last_reseed_age_seconds", "Seconds since the core DRBG last reseeded.", func() float64 {
				if t := s.rng.Health().LastReseed; !t.IsZero() {
					return time.Since(t).Seconds()
				}
				return -1
			}))
	}
	if s.calib != nil {
		cs = append(cs,
			gauge("avon_calibration_offset_seconds", "Calibrated time minus the local wall clock.", func() float64 { return s.calib.Status().Offset.Seconds() }),
			gauge("avon_calibration_uncertainty_seconds", "Uncertainty of the calibrated time.", func() float64 { return s.calib.Status().Uncertainty.Seconds() }),
			gauge("avon_calibration_age_seconds", "Age of the last calibration (monotonic).", func() float64 { return s.calib.Status().Age.Seconds() }),
			gauge("avon_calibration_fresh", "1 when the calibration is younger than max_age.", func() float64 { return b(s.calib.Status().Fresh) }))
	}
	cs = append(cs,
		gauge("avon_audit_head_seq", "Sequence number of the newest audit record.", func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			seq, _, _ := s.audit.Head(ctx)
			return float64(seq)
		}),
		gauge("avon_cache_up", "1 when the cache answers a ping.", func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return b(s.cache.Ping(ctx) == nil)
		}),
		gauge("avon_store_up", "1 when the store answers a ping.", func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return b(s.store.Ping(ctx) == nil)
		}))
	if s.checkpointer != nil {
		cs = append(cs, gauge("avon_audit_checkpoint_seq", "Sequence number the newest signed checkpoint covers.", func() float64 {
			return float64(s.checkpointer.Status().LastSeq)
		}), gauge("avon_audit_checkpoint_ok", "1 when the last checkpoint attempt succeeded.", func() float64 {
			return b(s.checkpointer.Status().Err == nil)
		}), gauge("avon_audit_checkpoint_age_seconds", "Seconds since the newest checkpoint was signed (-1: none yet).", func() float64 {
			if t := s.checkpointer.Status().LastTime; !t.IsZero() {
				return time.Since(t).Seconds()
			}
			return -1
		}))
	}
	cs = append(cs, cache.Collectors()...)
	for _, c := range cs {
		if err := s.registry.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				s.log.Warn("metric not registered", "error", err)
			}
		}
	}
}

// serviceChecks are the /readyz lines of the core services.
func (s *Server) serviceChecks() []api.Check {
	var cs []api.Check
	if s.rng != nil {
		cs = append(cs, api.Check{Name: "rng", Fn: func(context.Context) (string, error) {
			h := s.rng.Health()
			detail := fmt.Sprintf("state=%s reseeds=%d last_reseed=%s", h.State, h.Reseeds, h.LastReseed.UTC().Format(time.RFC3339))
			for _, src := range h.Sources {
				detail += fmt.Sprintf(" %s=%s", src.Name, sourceState(src))
			}
			if !h.OK {
				return detail, fmt.Errorf("rng failed closed: %s", h.Failure)
			}
			return detail, nil
		}})
	}
	if s.calib != nil {
		cs = append(cs, api.Check{Name: "calibration", Fn: s.calib.Ready})
	}
	cs = append(cs, api.Check{Name: "cache", Fn: func(ctx context.Context) (string, error) {
		return s.cfg.Cache.Type, s.cache.Ping(ctx)
	}})
	cs = append(cs, api.Check{Name: "audit", Fn: func(ctx context.Context) (string, error) {
		seq, _, err := s.audit.Head(ctx)
		if err != nil {
			return "", err
		}
		detail := fmt.Sprintf("head=%d", seq)
		if s.checkpointer == nil {
			return detail + " checkpoints=off (no kms plugin)", nil
		}
		st := s.checkpointer.Status()
		detail += fmt.Sprintf(" checkpoint=%d", st.LastSeq)
		if errors.Is(st.Err, audit.ErrBrokenChain) {
			// The stored log no longer matches what this core wrote.
			return detail, fmt.Errorf("audit log integrity: %w", st.Err)
		}
		if st.Err != nil {
			detail += " last_checkpoint_error=" + st.Err.Error()
		}
		return detail, nil
	}})
	return cs
}

func sourceState(s rng.SourceStatus) string {
	switch {
	case s.Excluded:
		return "excluded"
	case !s.OK:
		return "error"
	}
	return "ok"
}

// calibratedClock is the clock plugins see through the host Now service:
// calibrated time with its uncertainty and age once the calibrator runs,
// the system clock marked uncalibrated before.
type calibratedClock struct{ s *Server }

func (c calibratedClock) Now() host.Time {
	cal := c.s.calibrator()
	if cal == nil {
		return host.Time{Time: time.Now()}
	}
	st := cal.Status()
	t, err := cal.Now()
	if err != nil {
		return host.Time{Time: time.Now(), Uncertainty: st.Uncertainty, CalibrationAge: st.Age}
	}
	return host.Time{Time: t, Uncertainty: st.Uncertainty, CalibrationAge: st.Age, Calibrated: st.Fresh}
}

// pluginAudit is the audit sink plugins write to. Past recording the event
// (which must succeed, or the plugin refuses what it was doing), it turns
// the events other parts of the core act on into bus events: a CA plugin's
// revocation becomes events.CertRevoked for every replica's gateway and
// pulse. Publishing is best effort (the store is the truth; subscribers
// re-read it on gaps), so its failure is logged, not returned.
type pluginAudit struct{ s *Server }

func (a pluginAudit) Emit(ctx context.Context, source string, ev host.Event) error {
	if err := a.s.audit.Emit(ctx, source, ev); err != nil {
		return err
	}
	a.recorded(ctx, source, ev)
	return nil
}

// EmitWith implements pluginhost.AuditBatcher: the event and the plugin's
// store writes in one audit batch (audit.Log.AppendWith), then what Emit
// does after recording.
func (a pluginAudit) EmitWith(ctx context.Context, source string, ev host.Event, ops []store.Op) ([]int64, error) {
	_, vs, err := a.s.audit.AppendWith(ctx, source, ev, ops)
	if err != nil {
		return nil, err
	}
	a.recorded(ctx, source, ev)
	return vs, nil
}

// recorded acts on an event once it is on record.
func (a pluginAudit) recorded(ctx context.Context, source string, ev host.Event) {
	if ev.Action == "ca.revoke" && ev.Outcome == "success" && strings.HasPrefix(source, "ca.") && a.s.events != nil {
		serial := strings.TrimPrefix(ev.Target, "cert/")
		fields := map[string]string{"ca": source, "issuer": ev.Fields["issuer"], "reason": ev.Fields["reason"]}
		if _, err := a.s.events.Publish(ctx, events.CertRevoked, ev.Fields["issuer"]+"/"+serial, fields); err != nil {
			a.s.log.Warn("revocation event not published; replicas learn it from the store at their next re-read", "serial", serial, "error", err)
		}
	}
}

var _ pluginhost.AuditBatcher = pluginAudit{}
