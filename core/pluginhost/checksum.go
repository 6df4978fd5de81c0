package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// FileSHA256 returns the lowercase hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash plugin binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash plugin binary %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// verifyChecksum checks the binary against its pin before anything runs it.
// go-plugin checks the pin again when it starts the process (SecureConfig),
// which narrows the window between this check and exec.
func verifyChecksum(path, pin string, required bool) ([]byte, error) {
	pin = strings.ToLower(strings.TrimSpace(pin))
	if pin == "" {
		if required {
			return nil, fmt.Errorf("plugin binary %s has no sha256 pin and plugins.require_checksums is true: %w", path, ErrChecksumRequired)
		}
		return nil, nil
	}
	want, err := hex.DecodeString(pin)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("sha256 pin %q for %s is not 64 hex characters: %w", pin, path, ErrChecksumMismatch)
	}
	got, err := FileSHA256(path)
	if err != nil {
		return nil, err
	}
	if got != pin {
		return nil, &ChecksumError{Path: path, Expected: pin, Actual: got}
	}
	return want, nil
}
