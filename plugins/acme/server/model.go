package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/avonzt/avon/sdk/host"
)

// Statuses of accounts, orders, authorizations and challenges (RFC 8555
// section 7.1.6).
const (
	StatusPending     = "pending"
	StatusReady       = "ready"
	StatusProcessing  = "processing"
	StatusValid       = "valid"
	StatusInvalid     = "invalid"
	StatusDeactivated = "deactivated"
	StatusExpired     = "expired"
	StatusRevoked     = "revoked"
)

// Challenge types.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeDNS01     = "dns-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Identifier is an RFC 8555 identifier.
type Identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Storage layout, relative to the plugin's namespace:
//
//	acct/<id>          Account
//	acctkey/<thumb>    account id bound to a key (created create-only: one account per key)
//	order/<id>         Order
//	authz/<id>         Authz
//	cert/<serial>      Cert
//	eab/<kid>          EABKey
const (
	pfxAccount = "acct/"
	pfxAcctKey = "acctkey/"
	pfxOrder   = "order/"
	pfxAuthz   = "authz/"
	pfxCert    = "cert/"
	pfxEAB     = "eab/"
)

// Account is a stored account.
type Account struct {
	ID          string          `json:"id"`
	Status      string          `json:"status"`
	Contact     []string        `json:"contact,omitempty"`
	TermsAgreed bool            `json:"terms_agreed"`
	Key         json.RawMessage `json:"key"` // canonical JWK
	Thumbprint  string          `json:"thumbprint"`
	EABKeyID    string          `json:"eab_kid,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
}

// Order is a stored order.
type Order struct {
	ID          string       `json:"id"`
	AccountID   string       `json:"account"`
	Status      string       `json:"status"`
	Identifiers []Identifier `json:"identifiers"`
	AuthzIDs    []string     `json:"authzs"`
	Expires     time.Time    `json:"expires"`
	Profile     string       `json:"profile,omitempty"`
	Replaces    string       `json:"replaces,omitempty"`
	CertSerial  string       `json:"cert,omitempty"`
	Error       *Problem     `json:"error,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
}

// Authz is a stored authorization with its challenges.
type Authz struct {
	ID         string       `json:"id"`
	AccountID  string       `json:"account"`
	Identifier Identifier   `json:"identifier"`
	Wildcard   bool         `json:"wildcard,omitempty"`
	Status     string       `json:"status"`
	Expires    time.Time    `json:"expires"`
	Challenges []*Challenge `json:"challenges"`
}

// Challenge is one challenge of an authorization; its id is the type.
type Challenge struct {
	Type      string     `json:"type"`
	Token     string     `json:"token"`
	Status    string     `json:"status"`
	Validated *time.Time `json:"validated,omitempty"`
	Error     *Problem   `json:"error,omitempty"`
}

// Cert is a stored certificate.
type Cert struct {
	Serial    string    `json:"serial"`
	AccountID string    `json:"account"`
	OrderID   string    `json:"order"`
	DER       []byte    `json:"der"`
	Chain     [][]byte  `json:"chain"` // issuer first, root excluded
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Revoked   bool      `json:"revoked,omitempty"`
	// Replaced is set when an order that replaces it (RFC 9773) was
	// finalized.
	Replaced bool `json:"replaced,omitempty"`
}

// EABKey is an external account binding key (RFC 8555 section 7.3.4).
type EABKey struct {
	KID       string    `json:"kid"`
	Key       []byte    `json:"key"` // HMAC-SHA256 key
	Account   string    `json:"account,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Note      string    `json:"note,omitempty"`
}

// getJSON reads key into v and returns its version; host.ErrNotFound when
// absent.
func getJSON(ctx context.Context, st host.Storage, key string, v any) (int64, error) {
	e, err := st.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value, v); err != nil {
		return 0, fmt.Errorf("stored %s does not parse: %w", key, err)
	}
	return e.Version, nil
}

// getJSON is getJSON through r's reads ahead (get).
func (s *Server) getJSON(ctx context.Context, r *request, key string, v any) (int64, error) {
	e, err := s.get(ctx, r, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value, v); err != nil {
		return 0, fmt.Errorf("stored %s does not parse: %w", key, err)
	}
	return e.Version, nil
}

// putJSON writes v under key; with check, only if the version is still
// version (0: the key must not exist). host.ErrVersionConflict otherwise.
func putJSON(ctx context.Context, st host.Storage, key string, v any, check bool, version int64) (int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("marshal %s: %w", key, err)
	}
	return st.Put(ctx, key, b, host.PutOptions{Check: check, Version: version})
}

func isNotFound(err error) bool { return errors.Is(err, host.ErrNotFound) }
func isConflict(err error) bool { return errors.Is(err, host.ErrVersionConflict) }
