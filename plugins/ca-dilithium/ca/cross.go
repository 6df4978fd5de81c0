package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/sdk/host"
)

// Cross-certificates. When the CA has more than one root (the ML-DSA root
// and, with Config.Classical, the ECDSA root), every issuing CA is also
// certified by each root other than its own: a certificate with the
// issuing CA's subject and key, signed by the other root. A certificate the
// issuing CA signed then chains to either root, and clients pick the chain
// their trust store knows (the ACME plugin serves them as RFC 8555
// alternate chains). Cross-certificates are made once per (issuer
// generation, root) pair, stored create-only under cross/<issuer>/<root> so
// replicas agree on one, and never outlive either the issuing CA's own
// certificate or the root.

const crossPrefix = "cross/"

// crossRecord is stored under cross/<issuer>/<root>.
type crossRecord struct {
	Issuer    string    `json:"issuer"` // issuer record name (generation id)
	Root      string    `json:"root"`
	DER       []byte    `json:"der"`
	CreatedAt time.Time `json:"created_at"`
}

func crossKey(issuer, root string) string { return crossPrefix + issuer + "/" + root }

// loadCross reads the stored cross-certificates, by issuer and root.
func (e *Engine) loadCross(ctx context.Context) (map[string]map[string]crossRecord, error) {
	es, err := e.st.List(ctx, host.ListOptions{Prefix: crossPrefix, Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("load cross-certificates: %w", err)
	}
	out := map[string]map[string]crossRecord{}
	for _, en := range es {
		var r crossRecord
		if err := json.Unmarshal(en.Value, &r); err != nil {
			return nil, fmt.Errorf("cross-certificate record %s is corrupt: %v", en.Key, err)
		}
		if out[r.Issuer] == nil {
			out[r.Issuer] = map[string]crossRecord{}
		}
		out[r.Issuer][r.Root] = r
	}
	return out, nil
}

// rootOf is the root an issuer chains to in m (itself for a root).
func rootOf(m map[string]*issuer, is *issuer) *issuer {
	for n := 0; is != nil && is.rec.Parent != "" && n < 16; n++ {
		is = m[is.rec.Parent]
	}
	return is
}

// attachCross fills each issuer's alternates from the stored records: one
// chain per other root, [cross-certificate], ordered by root name. A
// record whose certificate does not parse, or is not the issuer's subject
// and key, is ignored.
func attachCross(m map[string]*issuer, recs map[string]map[string]crossRecord) {
	for name, byRoot := range recs {
		is, ok := m[name]
		if !ok {
			continue
		}
		roots := make([]string, 0, len(byRoot))
		for r := range byRoot {
			roots = append(roots, r)
		}
		sort.Strings(roots)
		is.alternates = nil
		for _, r := range roots {
			c, err := pqx509.ParseCertificate(byRoot[r].DER)
			if err != nil || !bytes.Equal(c.RawSubject, is.cert.RawSubject) || !c.PublicKey.Equal(is.cert.PublicKey) {
				continue
			}
			is.alternates = append(is.alternates, [][]byte{byRoot[r].DER})
		}
	}
}

// ensureCross makes the missing cross-certificates (every unexpired
// issuing generation under every root other than its own) and attaches
// what is stored. It returns how many it made. With one root it does
// nothing. Calls are serialized (reloadMu): concurrent first ListIssuers
// wait for the one making them and then find crossDone set, so each
// cross-certificate is signed once. The epoch moves once per call that
// made any, after the last is stored.
func (e *Engine) ensureCross(ctx context.Context) (int, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	e.mu.RLock()
	m, done := e.issuers, e.crossDone
	e.mu.RUnlock()
	if done {
		return 0, nil // made by the call this one waited for
	}
	var roots, issuing []*issuer
	for _, is := range m {
		if is.rec.Parent == "" {
			roots = append(roots, is)
		} else {
			issuing = append(issuing, is)
		}
	}
	if len(roots) < 2 {
		e.markCrossDone(m)
		return 0, nil
	}
	stored, err := e.loadCross(ctx)
	if err != nil {
		return 0, err
	}
	made, raced, err := e.makeCross(ctx, m, roots, issuing, stored)
	if len(made) > 0 {
		// Stored records are in effect even when a later one failed:
		// tell the other engines about them in one epoch write.
		what := make([]string, len(made))
		for i, r := range made {
			what[i] = r.Issuer + " " + r.Root
		}
		if berr := e.bumpEpoch(ctx, "cross "+strings.Join(what, ", ")); err == nil {
			err = berr
		}
	}
	if err != nil {
		return len(made), err
	}
	if raced {
		// Another replica stored some: read them.
		if stored, err = e.loadCross(ctx); err != nil {
			return len(made), err
		}
	} else {
		for _, r := range made {
			if stored[r.Issuer] == nil {
				stored[r.Issuer] = map[string]crossRecord{}
			}
			stored[r.Issuer][r.Root] = r
		}
	}
	e.mu.Lock()
	if sameIssuers(e.issuers, m) {
		attachCross(e.issuers, stored)
		e.crossDone, e.listed = true, nil
	}
	e.mu.Unlock()
	return len(made), nil
}

// makeCross signs and stores the cross-certificates of m missing from
// stored. It returns the records it stored (also on an error), and whether
// another replica stored one first.
func (e *Engine) makeCross(ctx context.Context, m map[string]*issuer, roots, issuing []*issuer,
	stored map[string]map[string]crossRecord) (made []crossRecord, raced bool, err error) {
	var now time.Time
	for _, is := range issuing {
		own := rootOf(m, is)
		for _, root := range roots {
			if root == own {
				continue
			}
			if _, ok := stored[is.rec.Name][root.rec.Name]; ok {
				continue
			}
			if now.IsZero() {
				if now, err = e.trustedNow(ctx); err != nil {
					return made, raced, err
				}
			}
			if !now.Before(is.cert.NotAfter) || !now.Before(root.cert.NotAfter) {
				continue // nothing to chain: expired
			}
			rec, err := e.crossCertify(ctx, now, is, root)
			if errors.Is(err, errRaced) {
				raced = true // another replica made it; loaded by the caller
				continue
			}
			if err != nil {
				return made, raced, err
			}
			made = append(made, rec)
			if err := e.emit(ctx, host.Event{Action: "ca.cross_certify", Target: "issuer/" + is.rec.Name, Outcome: "success",
				Fields: map[string]string{"root": root.rec.Name, "algorithm": root.rec.Algorithm}}); err != nil {
				return made, raced, fmt.Errorf("audit: %w", err)
			}
		}
	}
	return made, raced, nil
}

// markCrossDone records that the issuers m need no cross-certificate, if
// they are still the engine's.
func (e *Engine) markCrossDone(m map[string]*issuer) {
	e.mu.Lock()
	if sameIssuers(e.issuers, m) {
		e.crossDone = true
	}
	e.mu.Unlock()
}

func sameIssuers(a, b map[string]*issuer) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// crossCertify signs the cross-certificate of issuing CA is under root
// and stores it create-only (errRaced when another replica stored one).
// The caller moves the epoch.
func (e *Engine) crossCertify(ctx context.Context, now time.Time, is, root *issuer) (crossRecord, error) {
	serial, err := newSerialInt(e.rand)
	if err != nil {
		return crossRecord{}, err
	}
	c := is.cert
	notAfter := c.NotAfter
	if root.cert.NotAfter.Before(notAfter) {
		notAfter = root.cert.NotAfter
	}
	t := &pqx509.Template{SerialNumber: serial, Subject: c.Subject, NotBefore: now.Add(-time.Minute), NotAfter: notAfter,
		PublicKey: c.PublicKey, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		MaxPathLen: 0, MaxPathLenZero: true, PermittedDNSDomains: c.PermittedDNSDomains, SubjectKeyId: c.SubjectKeyId,
		CRLDistributionPoints: c.CRLDistributionPoints}
	der, err := pqx509.CreateCertificate(ctx, t, root.cert, root.signer)
	if err != nil {
		return crossRecord{}, fmt.Errorf("cross-certificate of %s under %s: %w", is.rec.Name, root.rec.Name, err)
	}
	got, err := pqx509.ParseCertificate(der)
	if err != nil {
		return crossRecord{}, err
	}
	if !bytes.Equal(got.RawSubject, c.RawSubject) {
		// A certificate the issuing CA signed names its subject as
		// encoded; another encoding would not chain.
		return crossRecord{}, fmt.Errorf("cross-certificate of %s: subject %q re-encodes differently", is.rec.Name,
			strings.ToValidUTF8(c.Subject.String(), "?"))
	}
	rec := crossRecord{Issuer: is.rec.Name, Root: root.rec.Name, DER: der, CreatedAt: now}
	b, _ := json.Marshal(rec)
	if _, err := e.st.Put(ctx, crossKey(is.rec.Name, root.rec.Name), b, host.PutOptions{Check: true}); err != nil {
		if errors.Is(err, host.ErrVersionConflict) {
			return crossRecord{}, errRaced
		}
		return crossRecord{}, fmt.Errorf("store cross-certificate %s/%s: %w", is.rec.Name, root.rec.Name, err)
	}
	return rec, nil
}
