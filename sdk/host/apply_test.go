package host_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
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

// FuzzCheckAuditedApply: any StorageApplyAudited request, as bytes off
// the wire, is either accepted, and then follows every rule, or refused
// with one of the documented errors; never a panic.
func FuzzCheckAuditedApply(f *testing.F) {
	seed := func(req *hostv1.StorageApplyAuditedRequest) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "a", Value: []byte("v"), Check: true}, {Key: "b", Delete: true}},
		Event: &hostv1.AuditEvent{Action: "ca.issue", Target: "cert/1", Fields: map[string]string{"k": "v"}}})
	seed(&hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "a"}, {Key: "a"}}, Event: &hostv1.AuditEvent{Action: "x"}})
	seed(&hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "a"}}})
	seed(&hostv1.StorageApplyAuditedRequest{Event: &hostv1.AuditEvent{Action: "x"}})
	seed(&hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "\x7f"}}, Event: &hostv1.AuditEvent{Action: "x"}})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req hostv1.StorageApplyAuditedRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return
		}
		ops := make([]host.Op, len(req.GetOps()))
		for i, op := range req.GetOps() {
			ops[i] = host.Op{Key: op.GetKey(), Value: op.GetValue(), Delete: op.GetDelete(), Check: op.GetCheck(), Version: op.GetVersion()}
		}
		ev := req.GetEvent()
		err := host.CheckAuditedApply(ops, host.Event{Action: ev.GetAction(), Target: ev.GetTarget(), Fields: ev.GetFields()})
		if err != nil {
			if !errors.Is(err, errdef.ErrInvalidArgument) && !errors.Is(err, host.ErrInvalidKey) && !errors.Is(err, host.ErrValueTooLarge) {
				t.Fatalf("CheckAuditedApply: undocumented error %v", err)
			}
			return
		}
		if ev.GetAction() == "" || len(ops) == 0 || len(ops) > host.MaxAuditedApplyOps {
			t.Fatalf("accepted %d ops with action %q", len(ops), ev.GetAction())
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
