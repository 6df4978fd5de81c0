package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/avonzt/avon/core/handshake"
)

// The gateway's delegated handshake key (docs/protocol.md §3.2.1): the KMS
// gateway key signs a short-lived credential for an ML-DSA-65 key kept in
// memory, and the handshakes sign with that key — one KMS call per
// credential instead of one per handshake. The delegator issues the first
// credential before the gateway starts and a new one when a quarter of the
// validity is left (retrying every delegationRetry on failure, so a KMS
// outage shorter than that quarter goes unnoticed by agents); the replaced
// key is cleared once the handshakes signing with it finish.

// delegationRetry is the wait after a failed issuance.
const delegationRetry = 30 * time.Second

// delegator keeps keys holding a valid delegated key.
type delegator struct {
	keys     *handshake.DelegatedKeys
	pinned   handshake.Signer // the KMS gateway key
	rand     io.Reader
	now      func() time.Time // calibrated; the zero time when stale
	validity time.Duration
	log      hclog.Logger
	// after is time.After; tests drive the schedule through it.
	after func(time.Duration) <-chan time.Time

	rotations, failures atomic.Uint64

	mu   sync.Mutex // guards cur
	cur  *handshake.Credential
	stop context.CancelFunc
	done chan struct{}
}

// newDelegator issues the first credential (an error: the gateway does not
// start, as it would not without its KMS key) and installs it in keys.
func newDelegator(keys *handshake.DelegatedKeys, pinned handshake.Signer, rnd io.Reader, now func() time.Time,
	validity time.Duration, log hclog.Logger) (*delegator, error) {
	d := &delegator{keys: keys, pinned: pinned, rand: rnd, now: now, validity: validity, log: log, after: time.After}
	if err := d.issue(); err != nil {
		return nil, err
	}
	return d, nil
}

// issue makes a new credential through the KMS and installs it.
func (d *delegator) issue() error {
	now := d.now()
	if now.IsZero() {
		d.failures.Add(1)
		return errors.New("delegated key: the calibrated clock is stale")
	}
	k, err := handshake.IssueCredential(d.pinned, d.rand, now, d.validity)
	if err != nil {
		d.failures.Add(1)
		return fmt.Errorf("delegated key: %w", err)
	}
	d.mu.Lock()
	first := d.cur == nil
	d.cur = k.Credential()
	d.mu.Unlock()
	if !first {
		d.rotations.Add(1)
	}
	d.keys.Install(k)
	d.log.Info("delegated handshake key issued", "not_after", k.Credential().NotAfter, "credential", fmt.Sprintf("%x", k.Credential().Hash[:8]))
	return nil
}

// current returns the installed credential.
func (d *delegator) current() *handshake.Credential {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// renewIn is how long to wait before the next issuance: until a quarter
// of the validity is left.
func (d *delegator) renewIn() time.Duration {
	c := d.current()
	at := c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 4)
	now := d.now()
	if now.IsZero() {
		return delegationRetry
	}
	return max(at.Sub(now), 0)
}

// start runs the renewal loop until close.
func (d *delegator) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stop, d.done = cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		wait := d.renewIn()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.after(wait):
			}
			if err := d.issue(); err != nil {
				left := d.current().NotAfter.Sub(d.now())
				d.log.Error("delegated handshake key not renewed; retrying", "error", err, "retry_in", delegationRetry, "current_valid_for", left.Round(time.Second))
				wait = delegationRetry
				continue
			}
			wait = d.renewIn()
		}
	}()
}

// close stops the loop and clears the delegated key.
func (d *delegator) close() {
	if d.stop != nil {
		d.stop()
		<-d.done
	}
	d.keys.Close()
}

// collectors exports the credential's age and expiry and the rotation
// and failure counts on /metrics.
func (d *delegator) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "avon_gateway_delegated_key_age_seconds",
			Help: "Age of the delegated handshake key's credential (calibrated time since its not_before)."},
			func() float64 {
				now := d.now()
				if now.IsZero() {
					return 0
				}
				return now.Sub(d.current().NotBefore).Seconds()
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "avon_gateway_delegated_key_expiry_timestamp_seconds",
			Help: "Unix time the delegated handshake key's credential expires."},
			func() float64 { return float64(d.current().NotAfter.UnixNano()) / 1e9 }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_delegated_key_rotations_total",
			Help: "Delegated handshake keys issued after the first one."}, func() float64 { return float64(d.rotations.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_delegated_key_failures_total",
			Help: "Failed delegated key issuances (KMS errors, stale clock)."}, func() float64 { return float64(d.failures.Load()) }),
	}
}
