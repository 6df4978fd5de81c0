package keystore

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// Errors opening a keystore file. They are errdef sentinels so that their
// codes survive the plugin boundary when Configure reports them.
var (
	// ErrWrongPassphrase: the passphrase (or key file) does not unlock the
	// file: its key-check value does not match.
	ErrWrongPassphrase = errdef.New("kmssoft.wrong_passphrase", codes.Unauthenticated, "wrong passphrase or key file")
	// ErrTampered: the key check passed but the file does not authenticate,
	// or the header or the key set inside is malformed.
	ErrTampered = errdef.New("kmssoft.tampered", codes.DataLoss, "file is corrupt or was tampered with")
)

// ErrClosed is returned by every method of a closed keystore: its material
// is gone, so it is locked in the sense of kms.ErrKeystoreLocked.
var ErrClosed = kms.ErrKeystoreLocked

// ErrConflict: a Shared keystore image changed between the read a
// mutation started from and its write (another replica wrote first).
// Mutations retry on it; Shared.Store returns an error wrapping it.
var ErrConflict = errdef.New("kmssoft.conflict", codes.Aborted, "the shared keystore changed meanwhile")
