package tunnel

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// Defaults of Config and Timers.
const (
	DefaultInterface = "avon0"
	DefaultMTU       = 1420

	DefaultHandshakeTimeout = 5 * time.Second
	DefaultBackoffMin       = time.Second
	DefaultBackoffMax       = 60 * time.Second
	DefaultKeepalive        = 10 * time.Second
	DefaultRekeyAfter       = transport.RekeyAfterTime
	DefaultRekeyTimeout     = 5 * time.Second
	DefaultOldKeys          = 10 * time.Second
	DefaultMissedPulses     = 3
	DefaultStatusInterval   = 2 * time.Second
	DefaultRoamCheck        = 3 * time.Second
	DefaultTick             = 250 * time.Millisecond
	// DefaultMaxSessionAge: the certificate is re-checked by a full
	// handshake at least this often (protocol §7).
	DefaultMaxSessionAge = 24 * time.Hour

	// StatusFile is the name of the status file in Config.StateDir.
	StatusFile = "status.json"
	// TokenFile keeps the last address token in Config.StateDir.
	TokenFile = "address-token.json"
	// CredentialFile keeps the gateway's last verified delegated credential
	// in Config.StateDir (docs/protocol.md §3.2.1), so that the first
	// handshake after a restart needs no 5.3 KB credential either.
	CredentialFile = "gateway-credential.bin"
)

// Timers are the engine's local timers; zero fields take the defaults.
// Tests shorten them.
type Timers struct {
	// HandshakeTimeout bounds one handshake attempt (Initiation to
	// SessionConfig).
	HandshakeTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential backoff
	// between failed attempts (1 s .. 60 s).
	BackoffMin, BackoffMax time.Duration
	// Keepalive: an empty transport packet after this long without sending.
	Keepalive time.Duration
	// RekeyAfter: the age of the session keys that starts a rekey (at most
	// transport.RekeyAfterTime).
	RekeyAfter time.Duration
	// RekeyTimeout: a RekeyInit without answer is sent again (new key, new
	// counter) after this long.
	RekeyTimeout time.Duration
	// OldKeys: how long the keys a rekey replaced still open packets.
	OldKeys time.Duration
	// StatusInterval: how often the status file is rewritten.
	StatusInterval time.Duration
	// RoamCheck: how often Config.LocalAddrs is polled.
	RoamCheck time.Duration
	// Tick is the main loop's timer granularity.
	Tick time.Duration
	// MaxSessionAge: a session this old is replaced by a fresh full
	// handshake (the gateway re-checks the certificate), the old one
	// carrying traffic until the new one is up.
	MaxSessionAge time.Duration
}

func (t Timers) withDefaults() Timers {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&t.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&t.BackoffMin, DefaultBackoffMin)
	def(&t.BackoffMax, DefaultBackoffMax)
	def(&t.Keepalive, DefaultKeepalive)
	def(&t.RekeyAfter, DefaultRekeyAfter)
	def(&t.RekeyTimeout, DefaultRekeyTimeout)
	def(&t.OldKeys, DefaultOldKeys)
	def(&t.StatusInterval, DefaultStatusInterval)
	def(&t.RoamCheck, DefaultRoamCheck)
	def(&t.Tick, DefaultTick)
	def(&t.MaxSessionAge, DefaultMaxSessionAge)
	if t.BackoffMax < t.BackoffMin {
		t.BackoffMax = t.BackoffMin
	}
	if t.RekeyAfter > transport.RekeyAfterTime {
		t.RekeyAfter = transport.RekeyAfterTime
	}
	return t
}

// Config configures an Engine.
type Config struct {
	// Gateway is the gateway's UDP address (from the bundle or a flag).
	Gateway netip.AddrPort
	// Signer holds the agent's ML-DSA-65 key; Chain is its certificate
	// chain (leaf first, DER).
	Signer handshake.Signer
	Chain  [][]byte
	// Credentials, when set, replaces Signer and Chain: it is called from
	// the main loop at the start of every handshake (also re-handshakes),
	// so that a renewed certificate is used by the next one. The Signer
	// it returns must stay usable until the next call. An error fails that
	// attempt (ErrCredentials) and the engine tries again after a backoff.
	Credentials func() (handshake.Signer, [][]byte, error)
	// GatewayPublicKey is the gateway's ML-DSA-65 key from the enrollment
	// (its certificate in the state directory).
	GatewayPublicKey []byte
	// AEAD is the transport AEAD to propose; zero: AES-256-GCM where the
	// CPU has AES instructions, else ChaCha20-Poly1305.
	AEAD handshake.AEADID
	// Rand supplies ephemeral keys, nonces, indexes, message ids and the
	// backoff jitter: the agent's DRBG. It must be safe for concurrent use.
	Rand io.Reader
	// Now is the agent's calibrated clock (Initiation timestamps, pulse
	// times). Default time.Now.
	Now func() time.Time
	// ClockOffset is the calibration's offset (calibrated - system) for
	// the pulses; nil means 0 (the system clock is the calibrated one).
	ClockOffset func() time.Duration
	// Logger; default a null logger.
	Logger hclog.Logger
	// Interface is the TUN device's name (default "avon0"), reported in
	// the status; MTU caps the tunnel MTU (default 1420): a SessionConfig
	// asking for more is clamped to it before OnConfig.
	Interface string
	MTU       int
	// StateDir, when set, keeps the address token and the status file.
	StateDir string
	// OnConfig applies the gateway's SessionConfig (addresses, routes,
	// MTU) to the host. It is called from the main loop for every
	// SessionConfig, also after a reconnect with the same content; an
	// error ends the session (ErrOnConfig) and the engine tries again
	// after a backoff. Nil: nothing is applied.
	OnConfig func(control.SessionConfig) error
	// AgentVersion and Facts go into every pulse (Facts may be nil; it
	// must return at most control.MaxFacts entries within the limits).
	AgentVersion string
	Facts        func() map[string]string
	// LocalAddrs, when set, is polled every Timers.RoamCheck; when the set
	// of local addresses changes, the bind is reopened (roaming).
	LocalAddrs func() ([]netip.Addr, error)
	// OSName overrides the OS string of the pulses (default runtime.GOOS
	// and /etc/os-release's PRETTY_NAME).
	OSName string
	Timers Timers
}

func (c *Config) validate() error {
	switch {
	case !c.Gateway.IsValid() || c.Gateway.Port() == 0:
		return fmt.Errorf("gateway address %v: %w", c.Gateway, ErrConfig)
	case c.Credentials == nil && (c.Signer == nil || len(c.Chain) == 0):
		return fmt.Errorf("signer and certificate chain are required: %w", ErrConfig)
	case len(c.GatewayPublicKey) != handshake.PublicKeyLen:
		return fmt.Errorf("gateway public key of %d bytes: %w", len(c.GatewayPublicKey), ErrConfig)
	case c.Rand == nil:
		return fmt.Errorf("rand is required: %w", ErrConfig)
	case c.AEAD != 0 && !c.AEAD.Valid():
		return fmt.Errorf("aead %s: %w", c.AEAD, ErrConfig)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClockOffset == nil {
		c.ClockOffset = func() time.Duration { return 0 }
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Interface == "" {
		c.Interface = DefaultInterface
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < control.MinMTU || c.MTU > 65535 {
		return fmt.Errorf("mtu %d: %w", c.MTU, ErrConfig)
	}
	if c.AEAD == 0 {
		c.AEAD = handshake.AEADID(transport.DefaultAEAD())
	}
	if c.AgentVersion == "" {
		c.AgentVersion = "dev"
	}
	if c.OSName == "" {
		c.OSName = osName()
	}
	c.Timers = c.Timers.withDefaults()
	return nil
}
