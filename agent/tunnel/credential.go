package tunnel

import (
	"os"
	"path/filepath"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/internal/atomicfile"
)

// keepCredential remembers the delegated credential a Response was
// verified with (nil: the gateway signed with its pinned key) for the next
// Initiation's hint, in memory and in StateDir/CredentialFile, and shows
// its expiry in the status.
func (e *Engine) keepCredential(c *handshake.Credential) {
	e.mu.Lock()
	if c == nil {
		e.status.DelegatedKeyExpires = time.Time{}
	} else {
		e.status.DelegatedKeyExpires = c.NotAfter.UTC()
	}
	e.mu.Unlock()
	if c == nil || c == e.cred {
		return
	}
	e.cred = c
	if e.cfg.StateDir != "" {
		if err := atomicfile.Write(filepath.Join(e.cfg.StateDir, CredentialFile), c.Raw, 0o644); err != nil {
			e.log.Debug("delegated credential not saved", "error", err)
		}
	}
}

// loadCredential returns the credential stored in dir when it verifies
// with the pinned gateway key and is valid now, else nil (a missing,
// stale or foreign file only costs the credential's bytes in the next
// Response).
func loadCredential(dir string, pinned []byte, now time.Time) *handshake.Credential {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, CredentialFile))
	if err != nil || len(b) != handshake.CredentialLen {
		return nil
	}
	c, err := handshake.VerifyCredential(b, pinned, now, handshake.DefaultMaxSkew)
	if err != nil {
		return nil
	}
	return c
}
