package control

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Type is the first byte of a control message.
type Type uint8

// The control message types of protocol v1.
const (
	TypeSessionConfig Type = 0x01 // gateway -> agent: addresses, routes, MTU, pulse interval, tokens
	TypePulse         Type = 0x02 // agent -> gateway: heartbeat with posture facts
	TypePulseAck      Type = 0x03 // gateway -> agent: next session token, server time
	TypeDenial        Type = 0x04 // gateway -> agent: a flow was denied
	TypeClose         Type = 0x05 // either way: the session ends
)

func (t Type) String() string {
	switch t {
	case TypeSessionConfig:
		return "session-config"
	case TypePulse:
		return "pulse"
	case TypePulseAck:
		return "pulse-ack"
	case TypeDenial:
		return "denial"
	case TypeClose:
		return "close"
	}
	return fmt.Sprintf("control-0x%02x", uint8(t))
}

// Limits of the encoding.
const (
	HeaderLen = 3    // type u8, length u16
	MaxBody   = 1200 // largest body: a control message always fits a tunnel packet
	// FirstIP is the smallest first byte that is not a control type (an
	// IPv4 packet starts 0x4_).
	FirstIP = 0x40

	TokenLen        = 32 // session tokens
	MaxAddressToken = 96 // address tokens (the protocol's token_len limit)

	MaxAddresses = 8  // tunnel addresses in a SessionConfig
	MaxRoutes    = 64 // routes in a SessionConfig (the body limit may bind first)
	MinMTU       = 576
	MinMTUv6     = 1280 // when an IPv6 tunnel address is assigned

	MinPulseInterval = time.Second
	MaxPulseInterval = 10 * time.Minute

	MaxOS           = 64
	MaxAgentVersion = 64
	MaxFacts        = 32
	MaxFactKey      = 64
	MaxFactValue    = 256

	MaxReason    = 256 // Denial and Close reasons
	MaxPolicyIDs = 16
	MaxPolicyID  = 128
)

// Close codes. Parse accepts any code (a newer peer may send others); these
// are the ones this version sends.
const (
	CloseShutdown      uint16 = 1 // the sender is going away
	CloseRevoked       uint16 = 2 // the certificate was revoked or the agent disabled
	CloseNotAuthorized uint16 = 3 // re-verification refused the session
	ClosePulseFailed   uint16 = 4 // pulses stopped or failed their checks
	CloseKilled        uint16 = 5 // an operator ended the session
	CloseReplaced      uint16 = 6 // a newer session of the same agent replaced it
	CloseConnectDenied uint16 = 7 // access policy denies the agent a session to this gateway
)

// Message is one of *SessionConfig, *Pulse, *PulseAck, *Denial and *Close.
// The set is closed: only this package's types implement it.
type Message interface {
	Type() Type
	// appendBody appends the body encoding, checking every field as Parse
	// would. A nil receiver is ErrMalformed.
	appendBody(b []byte) ([]byte, error)
}

// SessionConfig is the gateway's first packet after Finish.
type SessionConfig struct {
	// Addresses are the agent's tunnel addresses, each with the length of
	// the tunnel network (100.64.0.5/10): host bits allowed. 1..MaxAddresses.
	Addresses []netip.Prefix
	// Routes are the networks reachable through the tunnel, masked.
	Routes []netip.Prefix
	// MTU of the tunnel interface: at least MinMTU, MinMTUv6 with an IPv6
	// address.
	MTU uint16
	// PulseInterval is how often the agent sends a Pulse: whole
	// milliseconds within MinPulseInterval..MaxPulseInterval.
	PulseInterval time.Duration
	// AddressToken proves the agent's address on its next handshake (empty
	// when none is issued).
	AddressToken []byte
	// SessionToken is what the first Pulse must carry.
	SessionToken [TokenLen]byte
}

// Pulse is the agent's heartbeat.
type Pulse struct {
	Seq          uint64            // strictly increasing per session
	SessionToken [TokenLen]byte    // the last token the gateway gave
	AgentTime    int64             // the agent's calibrated time, unix ns
	ClockOffset  int64             // the agent's calibration offset (calibrated - system), ns
	OS           string            // at most MaxOS bytes
	AgentVersion string            // at most MaxAgentVersion bytes
	Facts        map[string]string // posture facts: at most MaxFacts, keys 1..MaxFactKey bytes, values at most MaxFactValue
}

// PulseAck answers an accepted Pulse.
type PulseAck struct {
	Seq          uint64         // the pulse's sequence number
	NextToken    [TokenLen]byte // what the next Pulse must carry
	ServerTime   int64          // the gateway's calibrated time, unix ns
	AddressToken []byte         // a fresh address token, or empty
}

// Denial tells the agent that a flow was refused by policy.
type Denial struct {
	Proto     uint8 // IP protocol number
	Src, Dst  netip.AddrPort
	Reason    string   // at most MaxReason bytes
	PolicyIDs []string // the policies that decided, at most MaxPolicyIDs of 1..MaxPolicyID bytes
}

// Close ends the session.
type Close struct {
	Code   uint16
	Reason string // at most MaxReason bytes
}

// Type implements Message.
func (*SessionConfig) Type() Type { return TypeSessionConfig }

// Type implements Message.
func (*Pulse) Type() Type { return TypePulse }

// Type implements Message.
func (*PulseAck) Type() Type { return TypePulseAck }

// Type implements Message.
func (*Denial) Type() Type { return TypeDenial }

// Type implements Message.
func (*Close) Type() Type { return TypeClose }

// IsControl reports whether a decrypted transport plaintext is a control
// message: its first byte is below 0x40. An empty plaintext (a keepalive) is
// not.
func IsControl(plaintext []byte) bool { return len(plaintext) > 0 && plaintext[0] < FirstIP }

// Marshal encodes m: header and body, without padding (the transport pads).
func Marshal(m Message) ([]byte, error) { return Append(make([]byte, 0, 128), m) }

// Append appends the encoding of m to dst. On error it returns dst
// unchanged in length.
func Append(dst []byte, m Message) ([]byte, error) {
	if m == nil {
		return dst, fmt.Errorf("marshal: nil message: %w", ErrMalformed)
	}
	start := len(dst)
	b := append(dst, byte(m.Type()), 0, 0)
	b, err := m.appendBody(b)
	if err != nil {
		return dst[:start], fmt.Errorf("marshal %s: %w", m.Type(), err)
	}
	n := len(b) - start - HeaderLen
	if n > MaxBody {
		return dst[:start], fmt.Errorf("marshal %s: body of %d bytes, limit %d: %w", m.Type(), n, MaxBody, ErrTooLarge)
	}
	binary.BigEndian.PutUint16(b[start+1:], uint16(n))
	return b, nil
}

// Parse decodes one control message from a decrypted transport plaintext,
// its zero padding included. See the package documentation for the errors.
// The returned message shares no memory with b.
func Parse(b []byte) (Message, error) {
	if len(b) < HeaderLen {
		return nil, fmt.Errorf("parse: %d bytes: %w", len(b), ErrTruncated)
	}
	if !IsControl(b) {
		return nil, fmt.Errorf("parse: first byte 0x%02x is not a control type: %w", b[0], ErrMalformed)
	}
	t := Type(b[0])
	n := int(binary.BigEndian.Uint16(b[1:]))
	if n > MaxBody {
		return nil, fmt.Errorf("parse %s: body of %d bytes, limit %d: %w", t, n, MaxBody, ErrTooLarge)
	}
	end := HeaderLen + n
	if len(b) < end {
		return nil, fmt.Errorf("parse %s: body of %d bytes, %d present: %w", t, n, len(b)-HeaderLen, ErrTruncated)
	}
	if len(b) > end {
		if padded := (end + 15) &^ 15; len(b) > padded {
			return nil, fmt.Errorf("parse %s: %d bytes after the body, padding is at most %d: %w", t, len(b)-end, padded-end, ErrMalformed)
		}
		for _, c := range b[end:] {
			if c != 0 {
				return nil, fmt.Errorf("parse %s: padding not zero: %w", t, ErrMalformed)
			}
		}
	}
	r := &reader{b: b[HeaderLen:end]}
	var m Message
	switch t {
	case TypeSessionConfig:
		m = parseSessionConfig(r)
	case TypePulse:
		m = parsePulse(r)
	case TypePulseAck:
		m = parsePulseAck(r)
	case TypeDenial:
		m = parseDenial(r)
	case TypeClose:
		m = parseClose(r)
	default:
		return nil, fmt.Errorf("parse: type 0x%02x: %w", uint8(t), ErrUnknownType)
	}
	r.end("body")
	if r.err != nil {
		return nil, fmt.Errorf("parse %s: %w", t, r.err)
	}
	return m, nil
}

func parseSessionConfig(r *reader) *SessionConfig {
	m := &SessionConfig{}
	n := int(r.u8("address count"))
	if r.err == nil && (n == 0 || n > MaxAddresses) {
		r.fail(countErr(n, MaxAddresses), "%d addresses, want 1..%d", n, MaxAddresses)
	}
	if r.err == nil {
		m.Addresses = make([]netip.Prefix, 0, n)
		for range n {
			m.Addresses = append(m.Addresses, r.prefix("address"))
		}
	}
	n = int(r.u8("route count"))
	if r.err == nil && n > MaxRoutes {
		r.fail(ErrTooLarge, "%d routes, limit %d", n, MaxRoutes)
	}
	if r.err == nil && n > 0 {
		m.Routes = make([]netip.Prefix, 0, n)
		for range n {
			p := r.prefix("route")
			if r.err == nil && p.Masked() != p {
				r.fail(ErrMalformed, "route %v has host bits set", p)
			}
			m.Routes = append(m.Routes, p)
		}
	}
	m.MTU = r.u16("mtu")
	ms := r.u32("pulse interval")
	m.PulseInterval = time.Duration(ms) * time.Millisecond
	m.AddressToken = r.bytes8(MaxAddressToken, "address token")
	m.SessionToken = r.token("session token")
	if r.err == nil {
		if err := m.checkValues(); err != nil {
			r.fail(err, "session config")
		}
	}
	return m
}

func countErr(n, max int) error {
	if n > max {
		return ErrTooLarge
	}
	return ErrMalformed
}

// checkValues checks the ranges of MTU and interval against the addresses.
func (m *SessionConfig) checkValues() error {
	minMTU := uint16(MinMTU)
	for _, a := range m.Addresses {
		if a.Addr().Is6() {
			minMTU = MinMTUv6
		}
	}
	if m.MTU < minMTU {
		return fmt.Errorf("mtu %d below %d: %w", m.MTU, minMTU, ErrMalformed)
	}
	d := m.PulseInterval
	if d < MinPulseInterval || d > MaxPulseInterval || d%time.Millisecond != 0 {
		return fmt.Errorf("pulse interval %s not whole milliseconds within %s..%s: %w", d, MinPulseInterval, MaxPulseInterval, ErrMalformed)
	}
	return nil
}

func (m *SessionConfig) appendBody(b []byte) ([]byte, error) {
	if m == nil {
		return b, fmt.Errorf("nil message: %w", ErrMalformed)
	}
	var err error
	if n := len(m.Addresses); n == 0 || n > MaxAddresses {
		return b, fmt.Errorf("%d addresses, want 1..%d: %w", n, MaxAddresses, countErr(n, MaxAddresses))
	}
	b = append(b, byte(len(m.Addresses)))
	for _, p := range m.Addresses {
		if b, err = appendPrefix(b, p, "address"); err != nil {
			return b, err
		}
	}
	if n := len(m.Routes); n > MaxRoutes {
		return b, fmt.Errorf("%d routes, limit %d: %w", n, MaxRoutes, ErrTooLarge)
	}
	b = append(b, byte(len(m.Routes)))
	for _, p := range m.Routes {
		if p.IsValid() && p.Masked() != p {
			return b, fmt.Errorf("route %v has host bits set: %w", p, ErrMalformed)
		}
		if b, err = appendPrefix(b, p, "route"); err != nil {
			return b, err
		}
	}
	if err := m.checkValues(); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, m.MTU)
	b = binary.BigEndian.AppendUint32(b, uint32(m.PulseInterval/time.Millisecond))
	if b, err = appendBytes8(b, m.AddressToken, MaxAddressToken, "address token"); err != nil {
		return b, err
	}
	return append(b, m.SessionToken[:]...), nil
}

func parsePulse(r *reader) *Pulse {
	m := &Pulse{}
	m.Seq = r.u64("seq")
	m.SessionToken = r.token("session token")
	m.AgentTime = int64(r.u64("agent time"))
	m.ClockOffset = int64(r.u64("clock offset"))
	m.OS = r.str8(0, MaxOS, "os")
	m.AgentVersion = r.str8(0, MaxAgentVersion, "agent version")
	n := int(r.u8("fact count"))
	if r.err == nil && n > MaxFacts {
		r.fail(ErrTooLarge, "%d facts, limit %d", n, MaxFacts)
	}
	if r.err != nil || n == 0 {
		return m
	}
	m.Facts = make(map[string]string, n)
	var prev []byte
	for i := range n {
		kn := int(r.u8("fact key length"))
		if r.err != nil {
			break
		}
		// Compare the raw key with the previous one before allocating it.
		if kn >= 1 && kn <= MaxFactKey && len(r.b) >= kn {
			if i > 0 && string(r.b[:kn]) <= string(prev) {
				r.fail(ErrMalformed, "fact key %q after %q: keys must be strictly increasing", r.b[:kn], prev)
				break
			}
			prev = r.b[:kn]
		}
		k := r.str(kn, 1, MaxFactKey, "fact key")
		v := r.str16(0, MaxFactValue, "fact value")
		if r.err != nil {
			break
		}
		m.Facts[k] = v
	}
	return m
}

func (m *Pulse) appendBody(b []byte) ([]byte, error) {
	if m == nil {
		return b, fmt.Errorf("nil message: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.SessionToken[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.AgentTime))
	b = binary.BigEndian.AppendUint64(b, uint64(m.ClockOffset))
	var err error
	if b, err = appendString(b, m.OS, false, 0, MaxOS, "os"); err != nil {
		return b, err
	}
	if b, err = appendString(b, m.AgentVersion, false, 0, MaxAgentVersion, "agent version"); err != nil {
		return b, err
	}
	if n := len(m.Facts); n > MaxFacts {
		return b, fmt.Errorf("%d facts, limit %d: %w", n, MaxFacts, ErrTooLarge)
	}
	b = append(b, byte(len(m.Facts)))
	if len(m.Facts) == 0 {
		return b, nil
	}
	for _, k := range slices.Sorted(maps.Keys(m.Facts)) {
		if b, err = appendString(b, k, false, 1, MaxFactKey, "fact key"); err != nil {
			return b, err
		}
		if b, err = appendString(b, m.Facts[k], true, 0, MaxFactValue, "fact value"); err != nil {
			return b, err
		}
	}
	return b, nil
}

func parsePulseAck(r *reader) *PulseAck {
	m := &PulseAck{}
	m.Seq = r.u64("seq")
	m.NextToken = r.token("next token")
	m.ServerTime = int64(r.u64("server time"))
	m.AddressToken = r.bytes8(MaxAddressToken, "address token")
	return m
}

func (m *PulseAck) appendBody(b []byte) ([]byte, error) {
	if m == nil {
		return b, fmt.Errorf("nil message: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.NextToken[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.ServerTime))
	return appendBytes8(b, m.AddressToken, MaxAddressToken, "address token")
}

func parseDenial(r *reader) *Denial {
	m := &Denial{}
	m.Proto = r.u8("proto")
	src := r.addr("src")
	sp := r.u16("src port")
	dst := r.addr("dst")
	dp := r.u16("dst port")
	if r.err == nil && src.Is4() != dst.Is4() {
		r.fail(ErrMalformed, "src %v and dst %v of different families", src, dst)
	}
	m.Src, m.Dst = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	m.Reason = r.str16(0, MaxReason, "reason")
	n := int(r.u8("policy count"))
	if r.err == nil && n > MaxPolicyIDs {
		r.fail(ErrTooLarge, "%d policy ids, limit %d", n, MaxPolicyIDs)
	}
	if r.err != nil || n == 0 {
		return m
	}
	m.PolicyIDs = make([]string, 0, n)
	for range n {
		m.PolicyIDs = append(m.PolicyIDs, r.str8(1, MaxPolicyID, "policy id"))
	}
	return m
}

func (m *Denial) appendBody(b []byte) ([]byte, error) {
	if m == nil {
		return b, fmt.Errorf("nil message: %w", ErrMalformed)
	}
	if src, dst := m.Src.Addr(), m.Dst.Addr(); src.IsValid() && dst.IsValid() && src.Is4() != dst.Is4() {
		return b, fmt.Errorf("src %v and dst %v of different families: %w", src, dst, ErrMalformed)
	}
	b = append(b, m.Proto)
	var err error
	if b, err = appendAddr(b, m.Src.Addr(), "src"); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, m.Src.Port())
	if b, err = appendAddr(b, m.Dst.Addr(), "dst"); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, m.Dst.Port())
	if b, err = appendString(b, m.Reason, true, 0, MaxReason, "reason"); err != nil {
		return b, err
	}
	if n := len(m.PolicyIDs); n > MaxPolicyIDs {
		return b, fmt.Errorf("%d policy ids, limit %d: %w", n, MaxPolicyIDs, ErrTooLarge)
	}
	b = append(b, byte(len(m.PolicyIDs)))
	for _, id := range m.PolicyIDs {
		if b, err = appendString(b, id, false, 1, MaxPolicyID, "policy id"); err != nil {
			return b, err
		}
	}
	return b, nil
}

func parseClose(r *reader) *Close {
	m := &Close{}
	m.Code = r.u16("code")
	m.Reason = r.str16(0, MaxReason, "reason")
	return m
}

func (m *Close) appendBody(b []byte) ([]byte, error) {
	if m == nil {
		return b, fmt.Errorf("nil message: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint16(b, m.Code)
	return appendString(b, m.Reason, true, 0, MaxReason, "reason")
}

// Interface guards.
var (
	_ Message = (*SessionConfig)(nil)
	_ Message = (*Pulse)(nil)
	_ Message = (*PulseAck)(nil)
	_ Message = (*Denial)(nil)
	_ Message = (*Close)(nil)
)
