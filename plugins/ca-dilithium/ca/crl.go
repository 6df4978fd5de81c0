package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
)

// crlRecord is the cached current CRL of an issuer (crl/<issuer>). It is
// dropped on every revocation and remade when more than half its lifetime
// has passed; its number only grows (crl-number/<issuer>).
type crlRecord struct {
	Number     string    `json:"number"` // decimal
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	DER        []byte    `json:"der"`
}

const crlNumberPrefix = "crl-number/"

// CRL returns the current full CRL of an issuer ("" = the default one).
func (e *Engine) CRL(ctx context.Context, req *sdkca.CRLRequest) (*sdkca.CRLResponse, error) {
	if err := e.requireInit(); err != nil {
		return nil, err
	}
	is, err := e.namedIssuer(req.Issuer)
	if err != nil {
		return nil, err
	}
	now, err := e.trustedNow(ctx)
	if err != nil {
		return nil, err
	}
	if en, err := e.st.Get(ctx, crlPrefix+is.rec.Name); err == nil {
		var c crlRecord
		if json.Unmarshal(en.Value, &c) == nil && now.Before(c.ThisUpdate.Add(c.NextUpdate.Sub(c.ThisUpdate)/2)) {
			return &sdkca.CRLResponse{CRL: c.DER, ThisUpdate: c.ThisUpdate, NextUpdate: c.NextUpdate}, nil
		}
	} else if !errors.Is(err, host.ErrNotFound) {
		return nil, err
	}
	revoked, err := e.revokedOf(ctx, is.rec.Name)
	if err != nil {
		return nil, err
	}
	number, err := e.nextCRLNumber(ctx, is.rec.Name)
	if err != nil {
		return nil, err
	}
	next := now.Add(e.cfg.CRLLifetime)
	der, err := pqx509.CreateCRL(ctx, pqx509.CRLTemplate{Number: number, ThisUpdate: now, NextUpdate: next, Revoked: revoked}, is.cert, is.signer)
	if err != nil {
		return nil, fmt.Errorf("CRL of %s: %w", is.rec.Name, err)
	}
	b, _ := json.Marshal(crlRecord{Number: number.String(), ThisUpdate: now, NextUpdate: next, DER: der})
	if _, err := e.st.Put(ctx, crlPrefix+is.rec.Name, b, host.PutOptions{}); err != nil {
		return nil, err
	}
	return &sdkca.CRLResponse{CRL: der, ThisUpdate: now, NextUpdate: next}, nil
}

// namedIssuer returns an issuer by a name ListIssuers gives ("" = the
// default family's active generation).
func (e *Engine) namedIssuer(name string) (*issuer, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if name == "" {
		for _, is := range e.active {
			if is.rec.Default {
				return is, nil
			}
		}
	}
	is, ok := e.resolveLocked(name)
	if !ok {
		return nil, fmt.Errorf("issuer %q: %w", name, sdkca.ErrUnknownIssuer)
	}
	return is, nil
}

// revokedOf lists the revoked certificates of an issuer from the index.
func (e *Engine) revokedOf(ctx context.Context, issuerName string) ([]pqx509.RevokedCertificate, error) {
	var out []pqx509.RevokedCertificate
	prefix := revokedPrefix + issuerName + "/"
	after := ""
	for i := 0; i < 1000; i++ {
		es, err := e.st.List(ctx, host.ListOptions{Prefix: prefix, After: after, Limit: 1000})
		if err != nil {
			return nil, fmt.Errorf("revocations of %s: %w", issuerName, err)
		}
		for _, en := range es {
			rec, _, err := e.getRecord(ctx, strings.TrimPrefix(en.Key, prefix))
			if err != nil {
				return nil, err
			}
			serial, _ := new(big.Int).SetString(rec.Serial, 16)
			out = append(out, pqx509.RevokedCertificate{SerialNumber: serial, RevocationTime: rec.RevokedAt, ReasonCode: rec.Reason})
		}
		if len(es) < 1000 {
			return out, nil
		}
		after = es[len(es)-1].Key
	}
	return nil, errors.New("too many revocations to list")
}

// nextCRLNumber increments the issuer's CRL number (compare-and-set, so
// replicas never reuse one).
func (e *Engine) nextCRLNumber(ctx context.Context, issuerName string) (*big.Int, error) {
	key := crlNumberPrefix + issuerName
	for attempt := 0; attempt < 16; attempt++ {
		n := big.NewInt(0)
		var opts host.PutOptions
		en, err := e.st.Get(ctx, key)
		switch {
		case errors.Is(err, host.ErrNotFound):
			opts = host.PutOptions{Check: true}
		case err != nil:
			return nil, err
		default:
			if _, ok := n.SetString(string(en.Value), 10); !ok {
				return nil, fmt.Errorf("CRL number of %s is corrupt", issuerName)
			}
			opts = host.PutOptions{Check: true, Version: en.Version}
		}
		n.Add(n, big.NewInt(1))
		if _, err := e.st.Put(ctx, key, []byte(n.String()), opts); err == nil {
			return n, nil
		} else if !errors.Is(err, host.ErrVersionConflict) {
			return nil, err
		}
	}
	return nil, errors.New("CRL number: too much contention")
}
