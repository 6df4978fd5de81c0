package cache

import (
	"context"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// ValidateName checks a session id, token id, rate-limit key or channel
// name: non-empty, at most MaxNameSize bytes, valid UTF-8, no control
// characters (NUL, C0, DEL, C1). what names the argument in the error,
// which wraps ErrInvalidArgument. Anything else is an ordinary name.
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("empty %s: %w", what, ErrInvalidArgument)
	}
	if len(name) > MaxNameSize {
		return fmt.Errorf("%s of %d bytes exceeds %d: %w", what, len(name), MaxNameSize, ErrInvalidArgument)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%s %q is not valid UTF-8: %w", what, name, ErrInvalidArgument)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains control character %U: %w", what, name, r, ErrInvalidArgument)
		}
	}
	return nil
}

// ValidateSet checks the name of a replay set or token set. Sets are fixed
// identifiers chosen in code ("jti", "enroll"), so the rule is narrow:
// 1..MaxSetSize bytes of a-z, 0-9, '.', '_' and '-'. Because a set never
// contains ':', the backends can join set and id with ':' without two pairs
// ever naming the same entry. The error wraps ErrInvalidArgument.
func ValidateSet(set string) error {
	if set == "" {
		return fmt.Errorf("empty set name: %w", ErrInvalidArgument)
	}
	if len(set) > MaxSetSize {
		return fmt.Errorf("set name of %d bytes exceeds %d: %w", len(set), MaxSetSize, ErrInvalidArgument)
	}
	for i := 0; i < len(set); i++ {
		c := set[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("set name %q: byte %#02x at %d is not one of a-z 0-9 . _ -: %w", set, c, i, ErrInvalidArgument)
		}
	}
	return nil
}

// CheckTTL checks a TTL or window: MinTTL..MaxTTL. what names the argument
// ("ttl", "window"); the error wraps ErrInvalidArgument.
func CheckTTL(what string, d time.Duration) error {
	if d < MinTTL || d > MaxTTL {
		return fmt.Errorf("%s %v outside %v..%v: %w", what, d, MinTTL, MaxTTL, ErrInvalidArgument)
	}
	return nil
}

// CheckValue checks a value's or payload's size; the error wraps
// ErrInvalidArgument.
func CheckValue(v []byte) error {
	if len(v) > MaxValueSize {
		return fmt.Errorf("value of %d bytes exceeds %d: %w", len(v), MaxValueSize, ErrInvalidArgument)
	}
	return nil
}

// CheckLimit checks a rate limit: 1..MaxLimit; the error wraps
// ErrInvalidArgument.
func CheckLimit(limit int) error {
	if limit < 1 || limit > MaxLimit {
		return fmt.Errorf("rate limit %d outside 1..%d: %w", limit, MaxLimit, ErrInvalidArgument)
	}
	return nil
}

// CheckAllow checks the arguments of Allow.
func CheckAllow(key string, limit int, window time.Duration) error {
	if err := ValidateName("rate-limit key", key); err != nil {
		return err
	}
	if err := CheckLimit(limit); err != nil {
		return err
	}
	return CheckTTL("window", window)
}

// CheckChannels checks the channels of Subscribe and returns them without
// duplicates, in their first order: 1..MaxChannels names, each following
// ValidateName. The error wraps ErrInvalidArgument.
func CheckChannels(channels []string) ([]string, error) {
	if len(channels) == 0 {
		return nil, fmt.Errorf("subscribe to no channel: %w", ErrInvalidArgument)
	}
	if len(channels) > MaxChannels {
		return nil, fmt.Errorf("subscribe to %d channels, more than %d: %w", len(channels), MaxChannels, ErrInvalidArgument)
	}
	out := make([]string, 0, len(channels))
	seen := make(map[string]bool, len(channels))
	for _, ch := range channels {
		if err := ValidateName("channel", ch); err != nil {
			return nil, err
		}
		if !seen[ch] {
			seen[ch] = true
			out = append(out, ch)
		}
	}
	return out, nil
}

// CheckContext returns an error wrapping ctx.Err() when ctx is done.
func CheckContext(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cache call: %w", err)
	}
	return nil
}

// Millis returns d in whole milliseconds, rounded up: the resolution of
// every TTL and window.
func Millis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
