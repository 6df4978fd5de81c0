package tunnel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/avonzt/avon/internal/atomicfile"
)

// States of the engine.
const (
	StateConnecting = "connecting" // a handshake is under way
	StateUp         = "up"         // a session is established and configured
	StateBackoff    = "backoff"    // waiting before the next attempt
	StateStopped    = "stopped"    // Run returned (or has not started)
)

// Limits of the status file.
const (
	MaxStatusSize = 64 << 10
	MaxDenials    = 16
	maxStatusText = 1024
	maxStatusList = 64
)

// Denial is a flow the gateway refused, from a Denial control message.
type Denial struct {
	Time      time.Time `json:"time"`
	Proto     uint8     `json:"proto"`
	Src       string    `json:"src"`
	Dst       string    `json:"dst"`
	Reason    string    `json:"reason"`
	PolicyIDs []string  `json:"policy_ids,omitempty"`
}

// Status is a snapshot of the engine, also the content of the status file.
type Status struct {
	State         string    `json:"state"`
	Since         time.Time `json:"since"`
	PID           int       `json:"pid,omitempty"`
	Gateway       string    `json:"gateway"`
	Interface     string    `json:"interface"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	// DelegatedKeyExpires is when the gateway's delegated handshake key
	// of the last handshake expires (zero: the gateway signed with its
	// pinned key).
	DelegatedKeyExpires time.Time `json:"delegated_key_expires,omitzero"`
	NextAttempt         time.Time `json:"next_attempt,omitzero"`
	Addresses           []string  `json:"addresses,omitempty"`
	Routes              []string  `json:"routes,omitempty"`
	MTU                 int       `json:"mtu,omitempty"`
	PulseInterval       string    `json:"pulse_interval,omitempty"`
	RxBytes             uint64    `json:"rx_bytes"`
	TxBytes             uint64    `json:"tx_bytes"`
	Handshakes          uint64    `json:"handshakes"`
	// Rehandshakes counts sessions replaced by a fresh handshake while up
	// (session age, changed certificate); RehandshakeReason and
	// LastRehandshake describe the last one that succeeded.
	Rehandshakes      uint64    `json:"rehandshakes,omitempty"`
	RehandshakeReason string    `json:"rehandshake_reason,omitempty"`
	LastRehandshake   time.Time `json:"last_rehandshake,omitzero"`
	Rekeys            uint64    `json:"rekeys"`
	Pulses            uint64    `json:"pulses"`
	// ServerTimeOffset is the gateway's time minus ours at the last
	// PulseAck (or clock_skew refusal).
	ServerTimeOffset string    `json:"server_time_offset,omitempty"`
	LastError        string    `json:"last_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	Denials          []Denial  `json:"denials,omitempty"`
	Updated          time.Time `json:"updated"`
}

func (s *Status) clone() Status {
	c := *s
	c.Addresses = slices.Clone(s.Addresses)
	c.Routes = slices.Clone(s.Routes)
	c.Denials = slices.Clone(s.Denials)
	return c
}

// ParseStatus reads a status file written by an Engine. It refuses files
// larger than MaxStatusSize, unknown states, over-long lists and text that
// is not UTF-8, so that `avon-agent status` prints only what an engine
// could have written.
func ParseStatus(b []byte) (*Status, error) {
	if len(b) > MaxStatusSize {
		return nil, fmt.Errorf("status of %d bytes, limit %d: %w", len(b), MaxStatusSize, ErrStatus)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("status is not UTF-8: %w", ErrStatus)
	}
	var s Status
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatus, err)
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after the status: %w", ErrStatus)
	}
	switch s.State {
	case StateConnecting, StateUp, StateBackoff, StateStopped:
	default:
		return nil, fmt.Errorf("state %q: %w", truncate(s.State, 32), ErrStatus)
	}
	if len(s.Addresses) > maxStatusList || len(s.Routes) > maxStatusList || len(s.Denials) > MaxDenials {
		return nil, fmt.Errorf("list too long: %w", ErrStatus)
	}
	texts := []string{s.Gateway, s.Interface, s.PulseInterval, s.ServerTimeOffset, s.LastError, s.RehandshakeReason}
	texts = append(texts, s.Addresses...)
	texts = append(texts, s.Routes...)
	for _, d := range s.Denials {
		if len(d.PolicyIDs) > maxStatusList {
			return nil, fmt.Errorf("denial policy list too long: %w", ErrStatus)
		}
		texts = append(texts, d.Src, d.Dst, d.Reason)
		texts = append(texts, d.PolicyIDs...)
	}
	for _, t := range texts {
		if len(t) > maxStatusText || !utf8.ValidString(t) {
			return nil, fmt.Errorf("text field too long or not UTF-8: %w", ErrStatus)
		}
	}
	if s.PID < 0 {
		return nil, fmt.Errorf("pid %d: %w", s.PID, ErrStatus)
	}
	return &s, nil
}

// writeStatus writes s atomically to dir/StatusFile (0644: it holds no
// secrets, and `avon-agent status` may run as another user).
func writeStatus(dir string, s Status) error {
	b, err := json.MarshalIndent(&s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, StatusFile), append(b, '\n'), 0o644)
}
