package errdef

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errTest = New("test.thing_missing", codes.NotFound, "thing missing")

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		in   error
		is   error
		code codes.Code
	}{
		{"sentinel wrapped", fmt.Errorf("find %q: %w", "x", errTest), errTest, codes.NotFound},
		{"shared sentinel", fmt.Errorf("kms: %w", ErrNotImplemented), ErrNotImplemented, codes.Unimplemented},
		{"canceled", fmt.Errorf("op: %w", context.Canceled), context.Canceled, codes.Canceled},
		{"deadline", context.DeadlineExceeded, context.DeadlineExceeded, codes.DeadlineExceeded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := ToStatus(c.in)
			if s, _ := status.FromError(st); s.Code() != c.code {
				t.Fatalf("code %v, want %v", s.Code(), c.code)
			}
			back := FromStatus(st)
			if !errors.Is(back, c.is) {
				t.Fatalf("identity lost: %v", back)
			}
			if back.Error() != c.in.Error() && c.code != codes.Canceled && c.code != codes.DeadlineExceeded {
				t.Fatalf("message %q, want %q", back.Error(), c.in.Error())
			}
		})
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	plain := FromStatus(ToStatus(errors.New("boom")))
	var e *Error
	if !errors.As(plain, &e) || e.Sentinel != nil || plain.Error() != "boom" {
		t.Fatalf("plain error: %#v", plain)
	}
	// A code this process does not know survives a second hop intact.
	unknown := &Error{Code: "future.thing", Msg: "from a newer plugin"}
	again := FromStatus(ToStatus(unknown))
	if !errors.As(again, &e) || e.Code != "future.thing" || e.Msg != "from a newer plugin" {
		t.Fatalf("unknown code lost: %#v", again)
	}
	if !errors.Is(FromStatus(status.Error(codes.Unavailable, "conn refused")), ErrPluginUnavailable) {
		t.Fatal("transport Unavailable not mapped")
	}
	if !errors.Is(FromStatus(status.Error(codes.Unimplemented, "unknown method")), ErrNotImplemented) {
		t.Fatal("Unimplemented (older plugin) not mapped")
	}
	passthrough := errors.New("host-side error")
	if FromStatus(passthrough) != passthrough {
		t.Fatal("non-status error altered")
	}
}

func TestDuplicateCodePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("duplicate code accepted")
		}
	}()
	New("test.thing_missing", codes.NotFound, "again")
}
