package token_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/plugins/kms-hsm/token"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

func random(t *testing.T, tok *token.Token) error {
	t.Helper()
	return tok.Do(context.Background(), func(c token.Ctx, sh pkcs11.SessionHandle) error {
		_, err := c.GenerateRandom(sh, 16)
		return err
	})
}

func TestOpenErrors(t *testing.T) {
	h := softhsmtest.Require(t)
	ctx := context.Background()
	_, err := token.Open(ctx, token.Options{Module: "/nonexistent/lib.so", TokenLabel: "x", PIN: "1"})
	if !errors.Is(err, token.ErrModule) {
		t.Errorf("missing module: %v", err)
	}
	_, err = token.Open(ctx, token.Options{Module: h.Module, TokenLabel: "no-such-token", PIN: softhsmtest.PIN})
	if !errors.Is(err, token.ErrTokenNotFound) || !strings.Contains(err.Error(), `"avon-test"`) {
		t.Errorf("unknown label: %v, want ErrTokenNotFound listing \"avon-test\"", err)
	}
	for _, o := range []token.Options{
		{Module: h.Module, TokenLabel: h.TestToken, PIN: softhsmtest.PIN, Sessions: token.MaxSessions + 1},
		{Module: h.Module, TokenLabel: h.TestToken, PIN: softhsmtest.PIN, LoginRetries: -1},
		{Module: h.Module, PIN: softhsmtest.PIN},
	} {
		if tok, err := token.Open(ctx, o); err == nil {
			tok.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

// A second Token of the process on a token it is logged in to cannot have
// its PIN checked by the token (the login is shared); a different PIN is
// refused rather than accepted unchecked.
func TestPINMismatchInProcess(t *testing.T) {
	h := softhsmtest.Require(t)
	ctx := context.Background()
	a, err := token.Open(ctx, token.Options{Module: h.Module, TokenLabel: h.TestToken, PIN: softhsmtest.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = token.Open(ctx, token.Options{Module: h.Module, TokenLabel: h.TestToken, PIN: "0000"})
	if !errors.Is(err, token.ErrPINIncorrect) {
		t.Fatalf("second Token with another PIN: %v, want ErrPINIncorrect", err)
	}
	b, err := token.Open(ctx, token.Options{Module: h.Module, TokenLabel: h.TestToken, PIN: softhsmtest.PIN})
	if err != nil {
		t.Fatalf("second Token with the same PIN: %v", err)
	}
	defer b.Close()
	if err := random(t, b); err != nil {
		t.Fatal(err)
	}
}

// second is another handle on the module, to act on the token behind a
// Token's back. PKCS#11 state is per process, so it shares the login.
func second(t *testing.T, h *softhsmtest.HSM, label string) (*pkcs11.Ctx, uint) {
	t.Helper()
	c := pkcs11.New(h.Module)
	if c == nil {
		t.Fatal("load module")
	}
	t.Cleanup(c.Destroy)
	if err := c.Initialize(); err != nil && !token.Is(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatal(err)
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if ti, err := c.GetTokenInfo(s); err == nil && strings.TrimRight(ti.Label, " ") == label {
			return c, s
		}
	}
	t.Fatalf("no token %q", label)
	return nil, 0
}

// When the PIN changes under an open Token and its sessions are lost, the
// re-login fails once with ErrPINIncorrect and is never tried again, even
// once the PIN would work: a Token never loops on a wrong PIN.
func TestPINChangedUnderPool(t *testing.T) {
	h := softhsmtest.Require(t)
	const label = "avon-pinchange"
	h.InitToken(t, label)
	ctx := context.Background()
	tok, err := token.Open(ctx, token.Options{Module: h.Module, TokenLabel: label, PIN: softhsmtest.PIN, Sessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if err := random(t, tok); err != nil {
		t.Fatal(err)
	}
	c, slot := second(t, h, label)
	sh, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetPIN(sh, softhsmtest.PIN, "4321"); err != nil {
		t.Fatalf("change the PIN: %v", err)
	}
	if err := c.CloseAllSessions(slot); err != nil {
		t.Fatal(err)
	}
	if err := random(t, tok); !errors.Is(err, token.ErrPINIncorrect) {
		t.Fatalf("after the PIN changed: %v, want ErrPINIncorrect", err)
	}
	// Put the PIN back and log the process in with it: the Token still
	// refuses, because it never retries a PIN the token rejected.
	sh, err = c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(sh, pkcs11.CKU_USER, "4321"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPIN(sh, "4321", softhsmtest.PIN); err != nil {
		t.Fatal(err)
	}
	if err := random(t, tok); !errors.Is(err, token.ErrPINIncorrect) {
		t.Fatalf("a rejected Token worked again: %v", err)
	}
	_ = c.CloseSession(sh)
	// A new Token (a new Configure) with the right PIN works.
	tok2, err := token.Open(ctx, token.Options{Module: h.Module, TokenLabel: label, PIN: softhsmtest.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer tok2.Close()
	if err := random(t, tok2); err != nil {
		t.Fatal(err)
	}
}

// Close waits for sessions in use, and every later Do fails.
func TestClose(t *testing.T) {
	h := softhsmtest.Require(t)
	tok, err := token.Open(context.Background(), token.Options{Module: h.Module, TokenLabel: h.TestToken, PIN: softhsmtest.PIN, Sessions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := random(t, tok); err != nil {
		t.Fatal(err)
	}
	tok.Close()
	tok.Close()
	if err := random(t, tok); !errors.Is(err, token.ErrClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tok.Do(ctx, func(token.Ctx, pkcs11.SessionHandle) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with a canceled context: %v", err)
	}
}
