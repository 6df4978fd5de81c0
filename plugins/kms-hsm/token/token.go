// Package token is kms-hsm's connection to one PKCS#11 token: it loads the
// module once per process (C_Initialize once, shared by every Token of that
// module), finds the token's slot by label, logs in as the user once, and
// hands out read/write sessions from a bounded pool, one operation at a
// time per session. A session that the token lost (closed, logged out,
// device removed) is dropped, reopened, logged in again, and the operation
// retried once.
//
// It holds no key material and knows nothing of AVON keys: callers build
// templates and mechanisms. The PIN is kept in memory for re-login after a
// lost session; a wrong PIN is never retried, so this package cannot lock a
// token.
package token

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/pkcs11"
)

// Limits of Options.
const (
	DefaultSessions = 4
	MaxSessions     = 64
	MaxLoginRetries = 5
)

// Options configure Open.
type Options struct {
	Module     string // path of the PKCS#11 library
	TokenLabel string // CKA_LABEL of the token (trailing blanks ignored)
	PIN        string // user PIN
	// Sessions is the pool size (0: DefaultSessions; at most MaxSessions).
	Sessions int
	// LoginRetries is how many more times a C_Login that failed for a
	// reason other than the PIN (device busy or failing) is tried during
	// Open, 0..MaxLoginRetries. CKR_PIN_INCORRECT and CKR_PIN_LOCKED are
	// never retried.
	LoginRetries int
	Logger       hclog.Logger
}

// module is one loaded PKCS#11 library, shared by every Token of the same
// path in this process. PKCS#11 allows one C_Initialize per application.
type module struct {
	path string
	ctx  *pkcs11.Ctx
	refs int  // Tokens using it; guarded by modulesMu
	fin  bool // whether this process initialized it (and so finalizes it)

	pinMu sync.Mutex
	// pins holds, by slot, the PIN the last successful C_Login of this
	// process used. The login state is shared by the whole application, so
	// a Token opened while it is logged in cannot have its PIN checked by
	// the token; it must match this one instead.
	pins map[uint]string
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

func acquireModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m, ok := modules[path]; ok {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("load PKCS#11 module %s: cannot open the library or it has no C_GetFunctionList: %w", path, ErrModule)
	}
	fin := true
	if err := ctx.Initialize(); err != nil {
		if !Is(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, fmt.Errorf("initialize PKCS#11 module %s: %v: %w", path, err, ErrModule)
		}
		fin = false // someone else in this process initialized it
	}
	m := &module{path: path, ctx: ctx, refs: 1, fin: fin, pins: map[uint]string{}}
	modules[path] = m
	return m, nil
}

func releaseModule(m *module) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules, m.path)
	if m.fin {
		_ = m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// Token is an open, logged-in token with a session pool. Its methods are
// safe for concurrent use.
//
// Locking: pool holds the session slots (a zero handle is a slot whose
// session must be opened before use); a goroutine owns a slot between
// taking it from pool and putting it back; gen is atomic. mu guards slot, closed, ready
// and pinRejected and serializes logins and slot look-ups.
type Token struct {
	mod   *module
	label string
	pin   string
	log   hclog.Logger
	pool  chan slot
	mechs map[uint]bool
	// gen is the session generation: a lost session bumps it, and pool
	// slots holding a session of an older generation drop it unused (a
	// token that lost one session usually lost them all, and PKCS#11
	// modules reuse handle numbers, so an old handle may name a new
	// session that another slot owns: it must not be used or closed).
	gen atomic.Uint64

	mu          sync.Mutex
	slot        uint
	closed      bool
	ready       bool  // the pool is filled (Open succeeded)
	pinRejected error // set once the token refused the PIN: no further login
}

// Open loads the module (once per process), finds the token by label, logs
// in and opens the pool. On error nothing stays open.
func Open(ctx context.Context, o Options) (*Token, error) {
	if o.Module == "" || o.TokenLabel == "" {
		return nil, errors.New("token: module and token label are required")
	}
	if o.Sessions == 0 {
		o.Sessions = DefaultSessions
	}
	if o.Sessions < 1 || o.Sessions > MaxSessions {
		return nil, fmt.Errorf("token: %d sessions outside 1..%d", o.Sessions, MaxSessions)
	}
	if o.LoginRetries < 0 || o.LoginRetries > MaxLoginRetries {
		return nil, fmt.Errorf("token: %d login retries outside 0..%d", o.LoginRetries, MaxLoginRetries)
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	m, err := acquireModule(o.Module)
	if err != nil {
		return nil, err
	}
	t := &Token{mod: m, label: strings.TrimRight(o.TokenLabel, " "), pin: o.PIN, log: o.Logger,
		pool: make(chan slot, o.Sessions)}
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	if t.slot, err = t.findSlot(); err != nil {
		return nil, err
	}
	ml, err := m.ctx.GetMechanismList(t.slot)
	if err != nil {
		return nil, fmt.Errorf("token %q: list mechanisms: %w", t.label, err)
	}
	t.mechs = map[uint]bool{}
	for _, mech := range ml {
		t.mechs[mech.Mechanism] = true
	}
	// The first session logs in, retrying only what is not the PIN's fault.
	sh, err := m.ctx.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("token %q: open session: %w", t.label, err)
	}
	for attempt := 0; ; attempt++ {
		err = t.login(sh)
		if err == nil || attempt >= o.LoginRetries || errors.Is(err, ErrPINIncorrect) || errors.Is(err, ErrPINLocked) {
			break
		}
		t.log.Warn("login failed; retrying", "token", t.label, "attempt", attempt+1, "error", err)
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	if err != nil {
		_ = m.ctx.CloseSession(sh)
		return nil, err
	}
	t.pool <- slot{h: sh}
	for range o.Sessions - 1 {
		t.pool <- slot{} // opened on first use
	}
	t.mu.Lock()
	t.ready = true
	t.mu.Unlock()
	ok = true
	return t, nil
}

// findSlot returns the slot of the present token labelled t.label, or an
// error listing the labels present.
func (t *Token) findSlot() (uint, error) {
	slots, err := t.mod.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list slots of %s: %w", t.mod.path, err)
	}
	var labels []string
	for _, s := range slots {
		ti, err := t.mod.ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		l := strings.TrimRight(ti.Label, " \x00")
		if l == t.label {
			return s, nil
		}
		labels = append(labels, fmt.Sprintf("%q", l))
	}
	slices.Sort(labels)
	present := "none"
	if len(labels) > 0 {
		present = strings.Join(labels, ", ")
	}
	return 0, fmt.Errorf("token %q in %s (tokens present: %s): %w", t.label, t.mod.path, present, ErrTokenNotFound)
}

// login makes the application's login state "user" through session sh.
// Caller must not hold mu.
func (t *Token) login(sh pkcs11.SessionHandle) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pinRejected != nil {
		return t.pinRejected
	}
	m := t.mod
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	known, recorded := m.pins[t.slot]
	// The login state is shared by the whole application: a Token opened
	// while another one of this process is logged in cannot have its PIN
	// checked by the token, so it must match the PIN that logged in.
	mismatch := recorded && known != t.pin
	if si, err := m.ctx.GetSessionInfo(sh); err == nil && (si.State == pkcs11.CKS_RW_USER_FUNCTIONS || si.State == pkcs11.CKS_RO_USER_FUNCTIONS) {
		if mismatch {
			return fmt.Errorf("log in to token %q: this process is logged in with another PIN: %w", t.label, ErrPINIncorrect)
		}
		return nil
	}
	err := m.ctx.Login(sh, pkcs11.CKU_USER, t.pin)
	switch {
	case err == nil:
		m.pins[t.slot] = t.pin
		return nil
	case Is(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		if mismatch {
			return fmt.Errorf("log in to token %q: this process is logged in with another PIN: %w", t.label, ErrPINIncorrect)
		}
		return nil
	case Is(err, pkcs11.CKR_PIN_INCORRECT):
		t.pinRejected = fmt.Errorf("log in to token %q: %w", t.label, ErrPINIncorrect)
		return t.pinRejected
	case Is(err, pkcs11.CKR_PIN_LOCKED):
		t.pinRejected = fmt.Errorf("log in to token %q: %w", t.label, ErrPINLocked)
		return t.pinRejected
	}
	return fmt.Errorf("log in to token %q: %w", t.label, err)
}

// HasMechanism reports whether the token lists mechanism m.
func (t *Token) HasMechanism(m uint) bool { return t.mechs[m] }

// Label returns the token's label.
func (t *Token) Label() string { return t.label }

// Slot returns the token's current slot ID.
func (t *Token) Slot() uint {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.slot
}

// Ctx is the PKCS#11 function table the Do callback uses.
type Ctx = *pkcs11.Ctx

// Do runs fn with a logged-in R/W session. If fn fails because the session
// or the login was lost, the session is dropped, a new one is opened and
// logged in, and fn runs once more. fn must be safe to run twice (it must
// not have changed the token before failing with a lost session). Do waits
// for a free session as long as ctx allows.
func (t *Token) Do(ctx context.Context, fn func(c Ctx, sh pkcs11.SessionHandle) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var s slot
	select {
	case s = <-t.pool:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { t.pool <- s }()
	for attempt := 0; ; attempt++ {
		if s.h != 0 && s.gen != t.gen.Load() {
			s.h = 0 // a session of a lost generation: never used, never closed
		}
		if s.h == 0 {
			g := t.gen.Load()
			h, err := t.open()
			if err != nil {
				return err
			}
			s = slot{h: h, gen: g}
		}
		err := fn(t.mod.ctx, s.h)
		if err == nil || !sessionLost(err) || attempt == 1 {
			return err
		}
		t.log.Warn("session lost; reopening", "token", t.label, "error", err)
		t.gen.CompareAndSwap(s.gen, s.gen+1)
		s.h = 0
		if deviceGone(err) {
			if rerr := t.refindSlot(); rerr != nil {
				return rerr
			}
		}
	}
}

// slot is a pool entry: a session handle (0: none yet) and the generation
// it was opened in.
type slot struct {
	h   pkcs11.SessionHandle
	gen uint64
}

// open opens and logs in a new session on the current slot.
func (t *Token) open() (pkcs11.SessionHandle, error) {
	t.mu.Lock()
	closed, slot := t.closed, t.slot
	t.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("token %q: %w", t.label, ErrClosed)
	}
	sh, err := t.mod.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil && deviceGone(err) {
		if rerr := t.refindSlot(); rerr != nil {
			return 0, rerr
		}
		t.mu.Lock()
		slot = t.slot
		t.mu.Unlock()
		sh, err = t.mod.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	}
	if err != nil {
		return 0, Internal(fmt.Sprintf("token %q: open session", t.label), err)
	}
	if err := t.login(sh); err != nil {
		_ = t.mod.ctx.CloseSession(sh)
		return 0, err
	}
	return sh, nil
}

func (t *Token) refindSlot() error {
	s, err := t.findSlot()
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.slot = s
	t.mu.Unlock()
	return nil
}

// Close closes the pool's sessions (waiting for those in use) and releases
// the module. It is idempotent; every later Do fails with ErrClosed.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	ready := t.ready
	t.mu.Unlock()
	if ready {
		n := cap(t.pool)
		g := t.gen.Load()
		for range n {
			if s := <-t.pool; s.h != 0 && s.gen == g {
				_ = t.mod.ctx.CloseSession(s.h)
			}
		}
		for range n {
			t.pool <- slot{} // later Do calls find no session and fail in open
		}
	}
	releaseModule(t.mod)
	return nil
}
