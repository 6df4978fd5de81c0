package tunnel

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/internal/atomicfile"
)

// savedToken is the address token kept in StateDir/TokenFile.
type savedToken struct {
	Gateway  string    `json:"gateway"`
	Token    []byte    `json:"token"`
	Received time.Time `json:"received"`
}

// loadToken returns the stored address token for gateway when it is
// younger than its lifetime, else nil.
func loadToken(dir, gateway string, now time.Time) []byte {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil || len(b) > 4096 {
		return nil
	}
	var t savedToken
	if json.Unmarshal(b, &t) != nil || t.Gateway != gateway || len(t.Token) == 0 || len(t.Token) > handshake.MaxTokenLen {
		return nil
	}
	if age := now.Sub(t.Received); age < 0 || age >= cookie.TokenLifetime {
		return nil
	}
	return t.Token
}

// saveToken stores an address token (0600: it proves our address to the
// gateway).
func saveToken(dir, gateway string, tok []byte, now time.Time) error {
	if dir == "" {
		return nil
	}
	b, err := json.Marshal(savedToken{Gateway: gateway, Token: tok, Received: now.UTC()})
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, TokenFile), b, 0o600)
}
