package ca

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
)

// Storage layout (the plugin's own namespace of the core store):
//
//	certs/<serial>               one record per certificate, by serial (hex)
//	revoked/<issuer>/<serial>    index of revoked certificates, for the CRL
//	issuers/<name>               issuer records (key, certificate, parent)
//	crl/<issuer>                 the current CRL and its number
//	cross/<issuer>/<root>        cross-certificates (cross.go)
//	issuers-epoch                written after every issuers/ or cross/ write (epoch.go)
const (
	certPrefix    = "certs/"
	revokedPrefix = "revoked/"
	issuerPrefix  = "issuers/"
	crlPrefix     = "crl/"
)

// Record is what the CA keeps about one certificate.
type Record struct {
	Serial    string    `json:"serial"` // lowercase hex, 32 digits
	Issuer    string    `json:"issuer"`
	Profile   string    `json:"profile"`
	Subject   string    `json:"subject,omitempty"` // common name
	SANs      []string  `json:"sans,omitempty"`
	KeyAlg    string    `json:"key_alg"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IssuedAt  time.Time `json:"issued_at"`
	DER       []byte    `json:"der"`
	Status    string    `json:"status"` // good, revoked
	RevokedAt time.Time `json:"revoked_at,omitempty"`
	Reason    int       `json:"reason,omitempty"`
}

// newSerial returns a random 128-bit positive serial (the top bit clear,
// so its DER INTEGER is at most 17 octets) as 32 hex digits.
func newSerial(r io.Reader) (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("serial: randomness: %w", err)
	}
	b[0] &= 0x7f
	if b[0] == 0 {
		b[0] = 0x40 // keep 127 random bits and a fixed length
	}
	return hex.EncodeToString(b), nil
}

// normalizeSerial accepts a serial in hex (any case, optional colons,
// with or without leading zeros, as big.Int's %x prints it) and returns the
// stored form: 32 hex digits for the 128-bit serials this CA makes.
func normalizeSerial(s string) (string, error) {
	s = strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if len(s) == 0 || len(s) > 40 {
		return "", fmt.Errorf("serial %q: want up to 40 hex digits: %w", s, sdkca.ErrCertificateNotFound)
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("serial %q is not a positive hex number: %w", s, sdkca.ErrCertificateNotFound)
	}
	if n.BitLen() <= 128 {
		return fmt.Sprintf("%032x", n), nil
	}
	return hex.EncodeToString(n.Bytes()), nil
}

func getRecord(ctx context.Context, st host.Storage, serial string) (Record, int64, error) {
	s, err := normalizeSerial(serial)
	if err != nil {
		return Record{}, 0, err
	}
	e, err := st.Get(ctx, certPrefix+s)
	if errors.Is(err, host.ErrNotFound) {
		return Record{}, 0, fmt.Errorf("serial %s: %w", s, sdkca.ErrCertificateNotFound)
	}
	if err != nil {
		return Record{}, 0, err
	}
	var rec Record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return Record{}, 0, fmt.Errorf("certificate record %s is corrupt: %v", s, err)
	}
	return rec, e.Version, nil
}

func hostList(prefix string) host.ListOptions { return host.ListOptions{Prefix: prefix, Limit: 1000} }
