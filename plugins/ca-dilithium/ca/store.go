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
	DER       []byte    `json:"der,omitempty"` // empty while reserved
	Status    string    `json:"status"`        // reserved, good, revoked
	RevokedAt time.Time `json:"revoked_at,omitempty"`
	Reason    int       `json:"reason,omitempty"`
}

const statusReserved = "reserved"

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

// reserveSerial draws serials until one is not taken, and reserves it with
// a create-only write: unique across concurrent issuers and replicas.
func reserveSerial(ctx context.Context, st host.Storage, r io.Reader, rec Record) (Record, int64, error) {
	for attempt := 0; attempt < 8; attempt++ {
		s, err := newSerial(r)
		if err != nil {
			return Record{}, 0, err
		}
		rec.Serial, rec.Status = s, statusReserved
		b, _ := json.Marshal(rec)
		v, err := st.Put(ctx, certPrefix+s, b, host.PutOptions{Check: true})
		if errors.Is(err, host.ErrVersionConflict) {
			continue // a 2^-127 event, or a broken generator
		}
		if err != nil {
			return Record{}, 0, fmt.Errorf("reserve serial: %w", err)
		}
		return rec, v, nil
	}
	return Record{}, 0, errors.New("serial: 8 collisions in a row; the random generator is broken")
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
	if rec.Status == statusReserved {
		return Record{}, 0, fmt.Errorf("serial %s is being issued: %w", s, sdkca.ErrCertificateNotFound)
	}
	return rec, e.Version, nil
}

func hostList(prefix string) host.ListOptions { return host.ListOptions{Prefix: prefix, Limit: 1000} }
