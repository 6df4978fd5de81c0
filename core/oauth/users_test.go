package oauth

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
)

var bg = context.Background()

type fixedClock struct {
	mu  sync.Mutex
	t   time.Time
	err error
}

func (c *fixedClock) now() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t, c.err
}

func newTestUsers(t *testing.T, kv store.KV, c *fixedClock) *Users {
	t.Helper()
	u, err := NewUsers(kv, rand.Reader, c.now, testArgon2)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// countingVerify wraps VerifyPassword and records which hashes it ran on.
type countingVerify struct {
	mu     sync.Mutex
	hashes []string
}

func (c *countingVerify) verify(encoded, pw string) (bool, error) {
	c.mu.Lock()
	c.hashes = append(c.hashes, encoded)
	c.mu.Unlock()
	return VerifyPassword(encoded, pw)
}

func (c *countingVerify) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hashes
	c.hashes = nil
	return h
}

func TestUsersAddAuthenticate(t *testing.T) {
	kv := memstore.New()
	c := &fixedClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	u := newTestUsers(t, kv, c)
	info, err := u.Add(bg, "alice", "correct horse battery", []string{"auditor", "admin", "admin"}, "local-admin:uid=0")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Roles) != 2 || info.Roles[0] != "admin" || info.Roles[1] != "auditor" || info.TOTP {
		t.Fatalf("info %+v", info)
	}
	if _, err := u.Add(bg, "alice", "another good password", []string{"admin"}, ""); !errors.Is(err, ErrUserExists) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, tc := range []struct {
		name, pw string
		roles    []string
	}{{"Alice", "correct horse battery", []string{"admin"}}, {"", "correct horse battery", []string{"admin"}},
		{"bob", "short", []string{"admin"}}, {"bob", "correct horse battery", nil}, {"bob", "correct horse battery", []string{"root"}}} {
		if _, err := u.Add(bg, tc.name, tc.pw, tc.roles, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("add %q %v: %v", tc.name, tc.roles, err)
		}
	}
	// The stored record holds the hash, never the password.
	e, _ := kv.Get(bg, userPrefix+"alice")
	if string(e.Value) == "" || contains(e.Value, "correct horse") {
		t.Fatalf("record %s", e.Value)
	}
	if got, err := u.Authenticate(bg, "alice", "correct horse battery", ""); err != nil || got.Name != "alice" {
		t.Fatalf("login: %+v %v", got, err)
	}
	if _, err := u.Authenticate(bg, "alice", "wrong password!!", ""); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := u.SetPassword(bg, "alice", "a new long password"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Authenticate(bg, "alice", "correct horse battery", ""); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password after change: %v", err)
	}
	if _, err := u.Authenticate(bg, "alice", "a new long password", ""); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := u.SetPassword(bg, "nobody", "a new long password"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("passwd of unknown user: %v", err)
	}
	list, err := u.List(bg)
	if err != nil || len(list) != 1 || list[0].Name != "alice" {
		t.Fatalf("list %+v %v", list, err)
	}
	// No trusted time: nothing is written.
	c.err = errors.New("calibration stale")
	if _, err := u.Add(bg, "bob", "correct horse battery", []string{"admin"}, ""); !errors.Is(err, ErrNoTime) {
		t.Fatalf("add without time: %v", err)
	}
	c.err = nil
	if _, err := u.Get(bg, "bob"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("bob exists: %v", err)
	}
}

func contains(b []byte, s string) bool { return s != "" && strings.Contains(string(b), s) }

// TestAuthenticateEqualisesUnknownUsers checks the code path that keeps
// the time of a login independent of whether the user exists: an unknown,
// malformed or disabled user name still runs one full password check, on
// the dummy hash made with the current parameters.
func TestAuthenticateEqualisesUnknownUsers(t *testing.T) {
	kv := memstore.New()
	c := &fixedClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	u := newTestUsers(t, kv, c)
	cv := &countingVerify{}
	SetVerify(u, cv.verify)
	if _, err := u.Add(bg, "alice", "correct horse battery", []string{"admin"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Add(bg, "dave", "correct horse battery", []string{"admin"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := u.SetDisabled(bg, "dave", true); err != nil {
		t.Fatal(err)
	}
	dummy, _ := ParsePasswordHash(Dummy(u))
	if dummy.Params != testArgon2 {
		t.Fatalf("dummy hash made with %+v, not the current %+v", dummy.Params, testArgon2)
	}
	e, _ := kv.Get(bg, userPrefix+"alice")
	for _, tc := range []struct {
		name, user, pw string
		want           string // hash the check must run on
	}{
		{"unknown user", "mallory", "correct horse battery", Dummy(u)},
		{"malformed name", "Mallory!", "correct horse battery", Dummy(u)},
		{"disabled user", "dave", "correct horse battery", Dummy(u)},
		{"wrong password", "alice", "not the password", ""},
	} {
		_, err := u.Authenticate(bg, tc.user, tc.pw, "")
		if !errors.Is(err, ErrBadCredentials) || err.Error() != ErrBadCredentials.Error() {
			t.Errorf("%s: error %v (must not say which part was wrong)", tc.name, err)
		}
		got := cv.take()
		if len(got) != 1 {
			t.Fatalf("%s: %d password checks, want exactly 1", tc.name, len(got))
		}
		if tc.want != "" && got[0] != tc.want {
			t.Errorf("%s: checked %q, want the dummy hash", tc.name, got[0])
		}
		if tc.want == "" && !contains(e.Value, got[0]) {
			t.Errorf("%s: did not check the user's own hash", tc.name)
		}
	}
}

func TestTOTPLoginAndReplay(t *testing.T) {
	kv := memstore.New()
	c := &fixedClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	u := newTestUsers(t, kv, c)
	if _, err := u.Add(bg, "carol", "correct horse battery", []string{"operator"}, ""); err != nil {
		t.Fatal(err)
	}
	secret, err := u.EnableTOTP(bg, "carol")
	if err != nil || len(secret) != 20 {
		t.Fatalf("enable: %d %v", len(secret), err)
	}
	code := TOTPCode(secret, TOTPStepAt(c.t))
	if _, err := u.Authenticate(bg, "carol", "correct horse battery", ""); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("no code: %v", err)
	}
	if _, err := u.Authenticate(bg, "carol", "wrong password!!", code); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password with a good code: %v", err)
	}
	if _, err := u.Authenticate(bg, "carol", "correct horse battery", code); err != nil {
		t.Fatalf("good code: %v", err)
	}
	_, err = u.Authenticate(bg, "carol", "correct horse battery", code)
	if !errors.Is(err, ErrTOTPReplay) || !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("replayed code: %v", err)
	}
	// The previous step's code is older than the one used: refused too.
	if _, err := u.Authenticate(bg, "carol", "correct horse battery", TOTPCode(secret, TOTPStepAt(c.t)-1)); !errors.Is(err, ErrTOTPReplay) {
		t.Fatalf("older code: %v", err)
	}
	c.t = c.t.Add(TOTPStep)
	if _, err := u.Authenticate(bg, "carol", "correct horse battery", TOTPCode(secret, TOTPStepAt(c.t))); err != nil {
		t.Fatalf("next step's code: %v", err)
	}
	if err := u.DisableTOTP(bg, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Authenticate(bg, "carol", "correct horse battery", ""); err != nil {
		t.Fatalf("after disabling TOTP: %v", err)
	}
}

// TestTOTPCodeOnceAcrossReplicas: two replicas (two Users over one store)
// receive the same code at once; exactly one accepts it.
func TestTOTPCodeOnceAcrossReplicas(t *testing.T) {
	kv := memstore.New()
	c := &fixedClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	a, b := newTestUsers(t, kv, c), newTestUsers(t, kv, c)
	if _, err := a.Add(bg, "carol", "correct horse battery", []string{"operator"}, ""); err != nil {
		t.Fatal(err)
	}
	secret, _ := a.EnableTOTP(bg, "carol")
	for round := range 5 {
		code := TOTPCode(secret, TOTPStepAt(c.t))
		var won atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := a
				if i%2 == 1 {
					u = b
				}
				if _, err := u.Authenticate(bg, "carol", "correct horse battery", code); err == nil {
					won.Add(1)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("round %d: %d logins accepted one code", round, won.Load())
		}
		c.t = c.t.Add(TOTPStep)
	}
}

// TestPasswordChecksBounded: at most MaxConcurrentHashes password checks
// run at once (each holds Argon2's memory); a login that cannot get a slot
// before its deadline fails as unavailable, not as a wrong password.
func TestPasswordChecksBounded(t *testing.T) {
	kv := memstore.New()
	c := &fixedClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	u := newTestUsers(t, kv, c)
	if _, err := u.Add(bg, "alice", "correct horse battery", []string{"admin"}, ""); err != nil {
		t.Fatal(err)
	}
	var inflight, peak atomic.Int32
	release := make(chan struct{})
	SetVerify(u, func(encoded, pw string) (bool, error) {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inflight.Add(-1)
		return VerifyPassword(encoded, pw)
	})
	n := MaxConcurrentHashes + 3
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "alice"
			if i%2 == 1 {
				name = "nobody" // the dummy check takes a slot too
			}
			_, _ = u.Authenticate(bg, name, "correct horse battery", "")
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); inflight.Load() < int32(MaxConcurrentHashes) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if got := inflight.Load(); got != int32(MaxConcurrentHashes) {
		t.Fatalf("%d checks running, want the %d slots full", got, MaxConcurrentHashes)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, err := u.Authenticate(ctx, "alice", "correct horse battery", ""); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBadCredentials) {
		t.Fatalf("no slot before the deadline: %v", err)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p > int32(MaxConcurrentHashes) {
		t.Fatalf("%d checks ran at once, limit %d", p, MaxConcurrentHashes)
	}
}
