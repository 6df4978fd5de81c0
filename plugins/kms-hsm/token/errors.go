package token

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// Errors opening or using a token. They are errdef sentinels so that their
// codes survive the plugin boundary when Configure reports them.
var (
	// ErrPINIncorrect: C_Login answered CKR_PIN_INCORRECT. It is never
	// retried, so the token's failed-login counter moves by one at most per
	// Configure and the token is never locked by this plugin.
	ErrPINIncorrect = errdef.New("kmshsm.pin_incorrect", codes.Unauthenticated, "PIN incorrect; not retrying so the token is not locked")
	// ErrPINLocked: the token's user PIN is locked (CKR_PIN_LOCKED); the
	// security officer must unblock it.
	ErrPINLocked = errdef.New("kmshsm.pin_locked", codes.FailedPrecondition, "user PIN is locked on the token")
	// ErrTokenNotFound: no present token carries the configured label.
	ErrTokenNotFound = errdef.New("kmshsm.token_not_found", codes.FailedPrecondition, "token not found")
	// ErrModule: the PKCS#11 library cannot be loaded or initialized.
	ErrModule = errdef.New("kmshsm.module", codes.FailedPrecondition, "PKCS#11 module unusable")
)

// ErrClosed is returned once Close has run: the sessions are gone, so the
// token is locked in the sense of kms.ErrKeystoreLocked.
var ErrClosed = kms.ErrKeystoreLocked

// Code returns the PKCS#11 return value carried by err and false if err is
// not a PKCS#11 error.
func Code(err error) (uint, bool) {
	var e pkcs11.Error
	if errors.As(err, &e) {
		return uint(e), true
	}
	return 0, false
}

// Is reports whether err carries the PKCS#11 return value rv.
func Is(err error, rv uint) bool {
	c, ok := Code(err)
	return ok && c == rv
}

// sessionLost reports whether err means the session (or its login) is gone
// and the operation may be retried once on a reopened, logged-in session.
func sessionLost(err error) bool {
	c, ok := Code(err)
	if !ok {
		return false
	}
	switch c {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_USER_NOT_LOGGED_IN:
		return true
	}
	return false
}

// deviceGone reports whether err means the token itself went away, so its
// slot must be looked up again by label.
func deviceGone(err error) bool {
	return Is(err, pkcs11.CKR_DEVICE_REMOVED) || Is(err, pkcs11.CKR_TOKEN_NOT_PRESENT) || Is(err, pkcs11.CKR_SLOT_ID_INVALID)
}

// Internal wraps a PKCS#11 failure the caller does not classify further as
// errdef.ErrInternal, naming what was being done.
func Internal(what string, err error) error {
	return fmt.Errorf("%s: %v: %w", what, err, errdef.ErrInternal)
}
