package host_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// FuzzCheckApply: any batch a plugin (or a forged request) sends is
// either accepted, and then follows every rule, or refused with one of
// the documented errors; never a panic.
func FuzzCheckApply(f *testing.F) {
	f.Add("a\nb\nc", 3, uint16(0))
	f.Add("a\na", 1, uint16(0))
	f.Add("", 0, uint16(1))
	f.Add("k\x00", 5, uint16(2))
	f.Add(strings.Repeat("k", 600), 1, uint16(0))
	f.Fuzz(func(t *testing.T, keys string, valueLen int, repeat uint16) {
		parts := strings.Split(keys, "\n")
		n := len(parts) * (1 + int(repeat%4))
		if keys == "" && repeat%2 == 1 {
			n = 0
		}
		vl := max(0, valueLen%1024)
		ops := make([]host.Op, 0, n)
		for i := range n {
			ops = append(ops, host.Op{Key: parts[i%len(parts)], Value: make([]byte, vl), Delete: i%3 == 0, Check: i%2 == 0})
		}
		err := host.CheckApply(ops)
		if err != nil {
			if !errors.Is(err, errdef.ErrInvalidArgument) && !errors.Is(err, host.ErrInvalidKey) && !errors.Is(err, host.ErrValueTooLarge) {
				t.Fatalf("CheckApply: undocumented error %v", err)
			}
			return
		}
		if len(ops) == 0 || len(ops) > host.MaxApplyOps {
			t.Fatalf("accepted %d ops", len(ops))
		}
		seen := map[string]bool{}
		for _, op := range ops {
			if seen[op.Key] || op.Key == "" || len(op.Key) > 512 || !utf8.ValidString(op.Key) {
				t.Fatalf("accepted key %q (seen before: %v)", op.Key, seen[op.Key])
			}
			seen[op.Key] = true
		}
	})
}
