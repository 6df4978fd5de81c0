package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// The gateway inside the core (gateway { enabled = true }): the engine of
// core/gateway over a TUN device and a UDP bind, its handshake signatures
// made by the KMS key "avon-gateway" (the key its certificate names),
// agents' chains checked against the CA plugins' roots with certificate
// status asked of the CA plugins, tunnel addresses kept in the store,
// revocation events from the bus ending sessions (core/pulse Revocations),
// and ca.rotated events (and subscription gaps) making it re-read the CA
// plugins' issuers, so a new issuing generation is trusted without a restart.
// The OS-specific part (TUN, addresses, routes) is in gateway_linux.go.

// gatewaySignTimeout bounds one handshake signature in the KMS plugin.
const gatewaySignTimeout = 5 * time.Second

// handshakeSigner adapts kmsSigner to handshake.Signer: pure ML-DSA-65
// with the handshake's context string, signed in the KMS plugin. The
// public key is the primary version's when the gateway started; after a
// rotation Sign fails (the certificate names the old key) until restart.
type handshakeSigner struct {
	k   *kmsSigner
	pub []byte
}

func newHandshakeSigner(k *kmsSigner) (*handshakeSigner, error) {
	_, alg, pub := k.current()
	if alg != kms.MLDSA65 || len(pub) != handshake.PublicKeyLen {
		return nil, fmt.Errorf("gateway key %s is %s with a %d-byte public key, want ML-DSA-65", k.id, alg, len(pub))
	}
	return &handshakeSigner{k: k, pub: pub}, nil
}

func (h *handshakeSigner) Public() []byte { return h.pub }

func (h *handshakeSigner) Sign(msg, sigCtx []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gatewaySignTimeout)
	defer cancel()
	sig, _, err := h.k.signWithContext(ctx, msg, sigCtx)
	return sig, err
}

var _ handshake.Signer = (*handshakeSigner)(nil)

// caPlugins returns the running CA plugin instances.
func (s *Server) caPlugins() []*pluginhost.Instance {
	var out []*pluginhost.Instance
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("ca") {
			out = append(out, inst)
		}
	}
	return out
}

// caIssuers returns the issuers of every CA plugin (DER): the
// self-signed ones are the trust anchors agents' chains end at, as in the
// enrollment bundle; the others are the issuing CAs, with which the
// gateway completes the path of an agent that sends its leaf alone.
func caIssuers(ctx context.Context, cas []*pluginhost.Instance) (roots, inters [][]byte, err error) {
	for _, inst := range cas {
		resp, err := inst.CA().ListIssuers(ctx, &sdkca.ListIssuersRequest{})
		if err != nil {
			return nil, nil, fmt.Errorf("ca.%s: list issuers: %w", inst.Spec().Name, err)
		}
		for _, is := range resp.Issuers {
			c, err := pqx509.ParseCertificate(is.Certificate)
			switch {
			case err != nil:
				return nil, nil, fmt.Errorf("ca.%s: issuer %s: %w", inst.Spec().Name, is.Name, err)
			case bytes.Equal(c.RawSubject, c.RawIssuer):
				roots = append(roots, is.Certificate)
			default:
				inters = append(inters, is.Certificate)
			}
		}
	}
	if len(roots) == 0 {
		return nil, nil, errors.New("no CA root to check agents against (is the CA initialized?)")
	}
	return roots, inters, nil
}

// issuerVerifier is the gateway's handshake.PeerVerifier: a
// handshake.ChainVerifier over the CA plugins' issuers (caIssuers), rebuilt
// by Refresh and swapped in atomically. A handshake in progress finishes on
// the verifier it began with; a failed Refresh keeps the previous one.
type issuerVerifier struct {
	cas     []*pluginhost.Instance
	revoked func(serial *big.Int) (bool, error)

	mu  sync.Mutex // serializes Refresh
	cur atomic.Pointer[handshake.ChainVerifier]
}

// newIssuerVerifier builds the first verifier; revoked is the
// ChainVerifierOptions.Revoked callback of every one it builds.
func newIssuerVerifier(ctx context.Context, cas []*pluginhost.Instance, revoked func(*big.Int) (bool, error)) (*issuerVerifier, error) {
	v := &issuerVerifier{cas: cas, revoked: revoked}
	if _, err := v.Refresh(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// Refresh re-reads the issuers and swaps in a verifier over them; it
// returns how many issuers (roots and intermediates) the verifier knows.
func (v *issuerVerifier) Refresh(ctx context.Context) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	roots, inters, err := caIssuers(ctx, v.cas)
	if err != nil {
		return 0, err
	}
	cv, err := handshake.NewChainVerifier(roots, handshake.ChainVerifierOptions{Revoked: v.revoked, Intermediates: inters})
	if err != nil {
		return 0, err
	}
	v.cur.Store(cv)
	return len(roots) + len(inters), nil
}

// VerifyChain implements handshake.PeerVerifier with the current verifier.
func (v *issuerVerifier) VerifyChain(chain [][]byte, now time.Time) (handshake.Peer, error) {
	return v.cur.Load().VerifyChain(chain, now)
}

var _ handshake.PeerVerifier = (*issuerVerifier)(nil)

// Bounds of one issuer refresh and of the retries after a failed one.
const (
	issuerRefreshTimeout = 10 * time.Second
	issuerRetryMin       = 2 * time.Second
	issuerRetryMax       = time.Minute
)

// watchIssuers refreshes v on every ca.rotated event and subscription gap
// (a rotation announced while the subscription was down). A failed refresh
// is retried with backoff until one succeeds or the next event. refreshed,
// when not nil, is called after every attempt (tests).
func watchIssuers(ctx context.Context, bus *events.Bus, v *issuerVerifier, log hclog.Logger, refreshed func(error)) (func(), error) {
	sub, err := bus.Subscribe(ctx, events.CARotated)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		defer sub.Close()
		retry := time.NewTimer(issuerRetryMax) // armed only after a failure
		retry.Stop()
		defer retry.Stop()
		backoff := issuerRetryMin
		refresh := func(why string) {
			rctx, rcancel := context.WithTimeout(ctx, issuerRefreshTimeout)
			n, err := v.Refresh(rctx)
			rcancel()
			retry.Stop()
			if err != nil {
				log.Warn("CA issuers not re-read; the gateway trusts the previous ones", "cause", why, "retry_in", backoff, "error", err)
				retry.Reset(backoff)
				backoff = min(2*backoff, issuerRetryMax)
			} else {
				log.Info("CA issuers re-read", "cause", why, "issuers", n)
				backoff = issuerRetryMin
			}
			if refreshed != nil {
				refreshed(err)
			}
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-sub.Gaps():
				refresh("event gap")
			case <-retry.C:
				refresh("retry")
			case e, ok := <-sub.C():
				if !ok {
					return
				}
				refresh("ca.rotated " + e.Subject + " " + e.Fields["issuer"] + " generation " + e.Fields["generation"])
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// statusCache answers "is this serial revoked?" for the handshake from the
// CA plugins, remembering good answers for statusGoodTTL and revoked ones
// for good. Errors are not remembered and fail the handshake closed.
//
// A revocation clears the good answers (Invalidate, called on every
// cert.revoked event and before a revoked session is terminated); an
// answer fetched while a clearing happened is not stored, so an agent
// whose session was just ended cannot reconnect on a stale "good".
type statusCache struct {
	lookup func(ctx context.Context, serial string) (bool, error)
	now    func() time.Time

	mu    sync.Mutex // guards the fields below
	epoch uint64
	good  map[string]time.Time // serial -> until
	bad   map[string]bool
}

const (
	statusGoodTTL    = 5 * time.Second
	statusCacheSize  = 4096
	statusAskTimeout = 3 * time.Second
)

func newStatusCache(lookup func(ctx context.Context, serial string) (bool, error), now func() time.Time) *statusCache {
	return &statusCache{lookup: lookup, now: now, good: map[string]time.Time{}, bad: map[string]bool{}}
}

// Revoked is the handshake.ChainVerifierOptions.Revoked callback.
func (c *statusCache) Revoked(serial *big.Int) (bool, error) {
	key := fmt.Sprintf("%x", serial)
	now := c.now()
	c.mu.Lock()
	if c.bad[key] {
		c.mu.Unlock()
		return true, nil
	}
	if until, ok := c.good[key]; ok && now.Before(until) {
		c.mu.Unlock()
		return false, nil
	}
	epoch := c.epoch
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), statusAskTimeout)
	defer cancel()
	revoked, err := c.lookup(ctx, key)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if revoked {
		if len(c.bad) >= statusCacheSize {
			clear(c.bad)
		}
		c.bad[key] = true
		return true, nil
	}
	if c.epoch == epoch {
		if len(c.good) >= statusCacheSize {
			clear(c.good)
		}
		c.good[key] = now.Add(statusGoodTTL)
	}
	return false, nil
}

// Invalidate forgets every good answer.
func (c *statusCache) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	clear(c.good)
}

// caStatus asks every CA plugin for serial (hex): revoked when one says so,
// good when one knows it as good, an error (fail closed) when none knows
// it or one could not answer.
func caStatus(cas []*pluginhost.Instance) func(ctx context.Context, serial string) (bool, error) {
	return func(ctx context.Context, serial string) (bool, error) {
		known := false
		var errs []error
		for _, inst := range cas {
			resp, err := inst.CA().GetCertificate(ctx, &sdkca.GetCertificateRequest{Serial: serial})
			switch {
			case errors.Is(err, sdkca.ErrCertificateNotFound):
				continue
			case err != nil:
				errs = append(errs, fmt.Errorf("ca.%s: %w", inst.Spec().Name, err))
				continue
			case resp.Status == sdkca.StatusRevoked:
				return true, nil
			case resp.Status == sdkca.StatusGood:
				known = true
			default:
				errs = append(errs, fmt.Errorf("ca.%s: status %q of serial %s", inst.Spec().Name, resp.Status, serial))
			}
		}
		if len(errs) > 0 {
			return false, errors.Join(errs...)
		}
		if !known {
			return false, fmt.Errorf("serial %s: %w", serial, sdkca.ErrCertificateNotFound)
		}
		return false, nil
	}
}

// revokingTerminator is the Revocations' Terminator: it clears the status
// cache before the gateway ends the session, so the agent's reconnection
// asks the CA again.
type revokingTerminator struct {
	g     *gateway.Gateway
	cache *statusCache
}

func (t revokingTerminator) Terminate(id pulse.ID, reason string) {
	t.cache.Invalidate()
	t.g.Terminate(id, reason)
}

// resyncSessions re-reads the status of every live session's certificate
// and ends the revoked ones, and asks ended (when not nil) whether an
// operator ended the session or disabled its agent meanwhile (at start and
// after event gaps).
func resyncSessions(g *gateway.Gateway, lookup func(ctx context.Context, serial string) (bool, error), cache *statusCache,
	ended func(ctx context.Context, si gateway.SessionInfo) (string, error)) pulse.Resync {
	return func(ctx context.Context) error {
		cache.Invalidate()
		seen := map[string]bool{}
		var errs []error
		for _, si := range g.Sessions() {
			if ended != nil {
				why, err := ended(ctx, si)
				if err != nil {
					errs = append(errs, err)
				} else if why != "" {
					g.Terminate(si.ID, why)
					continue
				}
			}
			if si.CertSerial == "" || seen[si.CertSerial] {
				continue
			}
			seen[si.CertSerial] = true
			revoked, err := lookup(ctx, si.CertSerial)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if revoked {
				g.TerminateSerial(si.CertSerial, "certificate revoked")
			}
		}
		return errors.Join(errs...)
	}
}

// watchRevocations clears the status cache on every cert.revoked event
// and subscription gap, so that an agent without a live session cannot
// connect on a good answer remembered from before its revocation.
func watchRevocations(ctx context.Context, bus *events.Bus, cache *statusCache) (func(), error) {
	sub, err := bus.Subscribe(ctx, events.CertRevoked)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sub.Gaps():
				cache.Invalidate()
			case _, ok := <-sub.C():
				if !ok {
					return
				}
				cache.Invalidate()
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// gatewayCollectors exports the engine's counters on /metrics.
func gatewayCollectors(g *gateway.Gateway) []prometheus.Collector {
	st := g.Stats()
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "avon_gateway_sessions", Help: "Live tunnel sessions."},
			func() float64 { return float64(g.Tracker().Len()) }),
		counter("avon_gateway_rx_datagrams_total", "UDP datagrams received.", st.RxDatagrams.Load),
		counter("avon_gateway_handshakes_started_total", "Initiations handled by the responder.", st.HandshakesStarted.Load),
		counter("avon_gateway_handshake_refusals_total", "Initiations and Finishes refused.", func() uint64 {
			return st.InitiationRefused.Load() + st.FinishRefused.Load()
		}),
		counter("avon_gateway_cookie_replies_total", "CookieReplies sent (address not proven, or under load).", st.CookieReplies.Load),
		counter("avon_gateway_rate_limited_total", "Initiations dropped over the per-source rate.", st.DropRateLimited.Load),
		counter("avon_gateway_sessions_established_total", "Sessions established.", st.SessionsEstablished.Load),
		counter("avon_gateway_sessions_ended_total", "Sessions ended for any reason.", st.SessionsEnded.Load),
		counter("avon_gateway_connect_refused_total", "Handshakes refused because policy denied connect (or could not decide).", st.ConnectRefused.Load),
		counter("avon_gateway_connect_cut_total", "Sessions ended because a connect re-check denied them.", st.ConnectCut.Load),
		counter("avon_gateway_rekeys_total", "Rekeys done.", st.Rekeys.Load),
		counter("avon_gateway_pulses_accepted_total", "Pulses accepted.", st.PulsesAccepted.Load),
		counter("avon_gateway_tun_tx_packets_total", "Packets from agents written to the TUN.", st.TunTxPackets.Load),
		counter("avon_gateway_tun_tx_bytes_total", "Bytes from agents written to the TUN.", st.TunTxBytes.Load),
		counter("avon_gateway_tun_rx_packets_total", "Packets read from the TUN and sent to agents.", st.TunRxPackets.Load),
		counter("avon_gateway_drops_total", "Transport packets dropped: replayed, forged, spoofed source, no session.", func() uint64 {
			return st.DropReplay.Load() + st.DropAuth.Load() + st.DropSpoofed.Load() + st.DropNoSession.Load() + st.DropExpired.Load()
		}),
		counter("avon_gateway_send_errors_total", "UDP send failures.", st.SendErrors.Load),
	}
}

// authorizeAgent is the gateway's Authorize: a disabled agent gets no
// session. A registry that cannot be read refuses (fail closed).
func (s *Server) authorizeAgent(ctx context.Context, peer handshake.Peer) error {
	disabled, err := agents.New(s.store).Disabled(ctx, peer.ID)
	if err != nil {
		return fmt.Errorf("agent registry: %w", err)
	}
	if disabled {
		return errors.New("agent disabled by an operator")
	}
	return nil
}

// operatorEnded says why an operator ended a live session while this
// replica was not listening: the session was killed, or its agent
// disabled ("" when neither).
func (s *Server) operatorEnded(ctx context.Context, si gateway.SessionInfo) (string, error) {
	if k, err := s.killed(ctx, si.ID); err != nil || k {
		return "session killed by an operator", err
	}
	if d, err := agents.New(s.store).Disabled(ctx, si.AgentID); err != nil || d {
		return "agent disabled", err
	}
	return "", nil
}
