package gateway

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
)

// Defaults of Config.
const (
	DefaultPort          = 4600
	DefaultMTU           = 1420
	DefaultMaxSessions   = 100_000
	DefaultMaxPending    = 4096
	DefaultPulseInterval = 10 * time.Second
	DefaultMissedPulses  = 3
	DefaultWorkers       = 4
	DefaultQueueLen      = 1024
)

// Timers of the engine (the protocol design's values).
const (
	// PendingTimeout is how long a half-open handshake waits for its
	// Finish.
	PendingTimeout = 10 * time.Second
	// OldKeyLifetime is how long a replaced keypair still opens packets
	// in flight before it is zeroized.
	OldKeyLifetime = 10 * time.Second
	// KeepaliveAfter is how long a session may go without the gateway
	// sending anything before it sends a keepalive.
	KeepaliveAfter = 10 * time.Second
	// MaxSessionAge forces a full handshake (certificate re-checked) at
	// least this often: the session is closed and the agent reconnects.
	MaxSessionAge = 24 * time.Hour
	// TickInterval is how often the timer loop runs.
	TickInterval = time.Second
)

// Config configures a Gateway. Zero fields take the defaults documented
// on each; New validates the rest before anything starts.
type Config struct {
	// Listen is the UDP address; only the port is used by the bind
	// (wireguard-go's binds listen on every address). Zero port: 4600.
	Listen netip.AddrPort
	// TunnelPrefix is the agents' IPv4 tunnel network; it must equal the
	// IPAM pool's prefix. Agents get one address of it, and the prefix
	// itself as a route (agent-to-agent traffic goes through the gateway).
	// Zero (with IPAM nil) for an IPv6-only tunnel.
	TunnelPrefix netip.Prefix
	// TunnelPrefix6 is the agents' IPv6 tunnel network, the prefix of
	// IPAM6, handed out like TunnelPrefix: with both set the tunnel is
	// dual stack and every agent gets one address of each. Zero (with
	// IPAM6 nil) for an IPv4-only tunnel. At least one family is required.
	TunnelPrefix6 netip.Prefix
	// Routes are further networks reachable through the tunnel, sent to
	// agents in the SessionConfig (masked, at most control.MaxRoutes less
	// one per tunnel prefix). A route's family must be one the tunnel
	// carries; link-local and multicast networks are refused.
	Routes []netip.Prefix
	// MTU of the tunnel, told to agents. Default 1420.
	MTU int
	// AEAD, when set, is the only transport AEAD accepted; zero accepts
	// both of suite v1 (the agent proposes).
	AEAD handshake.AEADID
	// HandshakeRate and HandshakeBurst are the per-source handshake token
	// bucket (core/tunnel/ratelimit defaults when zero).
	HandshakeRate  float64
	HandshakeBurst int
	// LoadThreshold is the handshake messages per second at which the
	// gateway is under load and requires a cookie (mac2) from everyone,
	// address tokens no longer sufficing. Zero: ratelimit.DefaultThreshold.
	LoadThreshold int
	// MaxSessions bounds the session table (default 100k); MaxPending the
	// half-open handshakes (default 4096).
	MaxSessions int
	MaxPending  int
	// PulseInterval is how often agents pulse (default 10 s);
	// MissedPulses how many may be missed before the session is dead
	// (default 3).
	PulseInterval time.Duration
	MissedPulses  int
	// MaxSkew is the calibration's max_skew for Initiation timestamps
	// (default handshake.DefaultMaxSkew).
	MaxSkew time.Duration
	// Workers is how many goroutines run handshake cryptography (default
	// 4); QueueLen how many handshake messages may wait for them (default
	// 1024; more are dropped and counted).
	Workers  int
	QueueLen int
	// Now is the calibrated clock (required); it must fail closed on its
	// own. Rand is the core's DRBG, safe for concurrent use (required).
	Now  func() time.Time
	Rand io.Reader
	// Signer holds the gateway's ML-DSA-65 key; Verifier checks agents'
	// chains and certificate status (handshake.ChainVerifier). Required.
	Signer   handshake.Signer
	Verifier handshake.PeerVerifier
	// Delegated, when set, holds the delegated handshake key the gateway
	// signs Responses with (Signer then only certifies it, elsewhere);
	// nil: Signer signs every Response (docs/protocol.md §3.2.1).
	Delegated *handshake.DelegatedKeys
	// Authorize, when set, decides whether an authenticated agent may have
	// a session at all (agent disabled, policy); it runs after the Finish
	// verified, within a 5 s deadline, and an error refuses the agent with
	// an authenticated not_authorized HandshakeError. It must fail closed.
	Authorize func(ctx context.Context, peer handshake.Peer) error
	// IPAM assigns IPv4 tunnel addresses, IPAM6 IPv6 ones; a family's
	// pool is required exactly when its tunnel prefix is set.
	IPAM  *ipam.Pool
	IPAM6 *ipam.Pool
	// Policy switches per-flow policy enforcement (policy.go); the zero
	// value keeps it off.
	Policy PolicyConfig
	// Logger; nil logs nothing.
	Logger hclog.Logger
}

// checkTunnelPrefix checks one family's tunnel prefix against its pool:
// both absent, or a masked prefix of the right family equal to the pool's.
func checkTunnelPrefix(p netip.Prefix, pool *ipam.Pool, v6 bool) error {
	name, family := "tunnel prefix", "IPv4"
	if v6 {
		name, family = "tunnel prefix6", "IPv6"
	}
	switch {
	case pool == nil && !p.IsValid():
		return nil
	case pool == nil:
		return fmt.Errorf("%s %v without its ipam pool", name, p)
	case !p.IsValid() || p != p.Masked():
		return fmt.Errorf("%s %v is not a masked prefix", name, p)
	case p.Addr().Is4() == v6 || p.Addr().Is4In6():
		return fmt.Errorf("%s %v is not an %s network", name, p, family)
	case p != pool.Prefix():
		return fmt.Errorf("%s %v differs from the ipam pool's %v", name, p, pool.Prefix())
	}
	return nil
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("gateway: "+format+": %w", append(a, ErrConfig)...)
	}
	if c.Now == nil || c.Rand == nil || c.Signer == nil || c.Verifier == nil {
		return bad("Now, Rand, Signer and Verifier are required")
	}
	if c.IPAM == nil && c.IPAM6 == nil {
		return bad("an ipam pool is required (IPAM for IPv4, IPAM6 for IPv6, or both)")
	}
	if c.Listen.Port() == 0 {
		c.Listen = netip.AddrPortFrom(c.Listen.Addr(), DefaultPort)
	}
	if err := checkTunnelPrefix(c.TunnelPrefix, c.IPAM, false); err != nil {
		return bad("%v", err)
	}
	if err := checkTunnelPrefix(c.TunnelPrefix6, c.IPAM6, true); err != nil {
		return bad("%v", err)
	}
	families := 0
	if c.IPAM != nil {
		families++
	}
	if c.IPAM6 != nil {
		families++
	}
	if len(c.Routes) > control.MaxRoutes-families {
		return bad("%d routes, at most %d", len(c.Routes), control.MaxRoutes-families)
	}
	for _, r := range c.Routes {
		a := r.Addr()
		switch {
		case !r.IsValid() || r != r.Masked() || a.Is4In6() || a.Zone() != "":
			return bad("route %v is not a masked prefix", r)
		case a.IsLinkLocalUnicast() || a.IsMulticast():
			return bad("route %v is a link-local or multicast network, which a tunnel does not carry", r)
		case a.Is4() && c.IPAM == nil:
			return bad("route %v is IPv4 but the tunnel has no IPv4 network (TunnelPrefix)", r)
		case a.Is6() && c.IPAM6 == nil:
			return bad("route %v is IPv6 but the tunnel has no IPv6 network (TunnelPrefix6)", r)
		}
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < control.MinMTU || c.MTU > 65535 {
		return bad("mtu %d out of range", c.MTU)
	}
	if c.IPAM6 != nil && c.MTU < control.MinMTUv6 {
		return bad("mtu %d: an IPv6 tunnel needs at least %d", c.MTU, control.MinMTUv6)
	}
	if c.AEAD != 0 && !c.AEAD.Valid() {
		return bad("unknown aead %d", c.AEAD)
	}
	if c.HandshakeRate < 0 || c.HandshakeBurst < 0 || c.LoadThreshold < 0 || c.MaxSessions < 0 || c.MaxPending < 0 ||
		c.PulseInterval < 0 || c.MissedPulses < 0 || c.MaxSkew < 0 || c.Workers < 0 || c.QueueLen < 0 {
		return bad("negative limit")
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.PulseInterval == 0 {
		c.PulseInterval = DefaultPulseInterval
	}
	if c.PulseInterval < control.MinPulseInterval || c.PulseInterval > control.MaxPulseInterval ||
		c.PulseInterval%time.Millisecond != 0 {
		return bad("pulse interval %v out of range", c.PulseInterval)
	}
	if c.MissedPulses == 0 {
		c.MissedPulses = DefaultMissedPulses
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = handshake.DefaultMaxSkew
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.QueueLen == 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.Workers > 1024 || c.QueueLen > 1<<20 {
		return bad("workers %d or queue %d too large", c.Workers, c.QueueLen)
	}
	switch c.Policy.Mode {
	case "", PolicyOff, PolicyEnforce:
	default:
		return bad("policy mode %q: want %q or %q", c.Policy.Mode, PolicyOff, PolicyEnforce)
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c, nil
}
