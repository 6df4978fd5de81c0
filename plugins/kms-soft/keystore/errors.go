package keystore

import "errors"

// Errors opening a keystore file.
var (
	// ErrWrongPassphrase: the passphrase (or key file) does not unlock it.
	ErrWrongPassphrase = errors.New("wrong passphrase or key file")
	// ErrTampered: the file is corrupt or was modified.
	ErrTampered = errors.New("file is corrupt or was tampered with")
	// ErrClosed: the keystore was closed.
	ErrClosed = errors.New("keystore closed")
)
