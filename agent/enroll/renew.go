package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/atomicfile"
	"github.com/avonzt/avon/internal/pqx509"
)

// renewDomain must match the core's RenewDomain.
const renewDomain = "AVON-RENEW-v1\x00"

// ErrNotDue means the certificate has more than a third of its lifetime
// left; Renew did nothing.
var ErrNotDue = errors.New("renewal not due yet")

// RenewOptions are the inputs of Renew.
type RenewOptions struct {
	StateDir          string
	ServerFingerprint string
	CAFile            string
	Rand              io.Reader
	Force             bool // renew even when not due
	Now               func() time.Time
}

func loadPEM(path, typ string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		if blk.Type == typ {
			out = append(out, blk.Bytes)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no %s", path, typ)
	}
	return out, nil
}

func signerFromSeed(seed []byte) (*seedSigner, error) {
	if len(seed) != mldsa65.SeedSize {
		return nil, fmt.Errorf("agent key: %d bytes, want a %d-byte ML-DSA-65 seed", len(seed), mldsa65.SeedSize)
	}
	var sd [mldsa65.SeedSize]byte
	copy(sd[:], seed)
	pk, sk := mldsa65.NewKeyFromSeed(&sd)
	clear(sd[:])
	raw, _ := pk.MarshalBinary()
	return &seedSigner{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}}, nil
}

// Renew replaces the agent's key and certificate before the certificate
// expires, authenticated by the current key: the core checks the current
// certificate (chain, validity, not revoked) and a proof signed with its
// key over the new CSR and the time. The agent id is kept.
func Renew(ctx context.Context, o RenewOptions) (*Bundle, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	var b Bundle
	bj, err := os.ReadFile(filepath.Join(o.StateDir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("not enrolled? %w", err)
	}
	if err := json.Unmarshal(bj, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", BundleFile, err)
	}
	certs, err := loadPEM(filepath.Join(o.StateDir, CertFile), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cur, err := pqx509.ParseCertificate(certs[0])
	if err != nil {
		return nil, err
	}
	now := o.Now()
	if !o.Force && now.Before(cur.NotAfter.Add(-cur.NotAfter.Sub(cur.NotBefore)/3)) {
		return nil, fmt.Errorf("%w: the certificate is valid until %s", ErrNotDue, cur.NotAfter.Format(time.RFC3339))
	}
	seeds, err := loadPEM(filepath.Join(o.StateDir, KeyFile), "AVON ML-DSA-65 SEED")
	if err != nil {
		return nil, err
	}
	old, err := signerFromSeed(seeds[0])
	clear(seeds[0])
	if err != nil {
		return nil, err
	}
	if !old.pub.Equal(cur.PublicKey) {
		return nil, errors.New("the stored key is not the certificate's key; enroll again")
	}
	rootsDER, err := loadPEM(filepath.Join(o.StateDir, RootsFile), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	client, err := (&Options{ServerFingerprint: o.ServerFingerprint, CAFile: o.CAFile}).client()
	if err != nil {
		return nil, err
	}
	seed := make([]byte, mldsa65.SeedSize)
	if _, err := io.ReadFull(o.Rand, seed); err != nil {
		return nil, fmt.Errorf("new key: randomness: %w", err)
	}
	defer clear(seed)
	next, err := signerFromSeed(seed)
	if err != nil {
		return nil, err
	}
	csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{}, next)
	if err != nil {
		return nil, err
	}
	ts := now.UTC().Format(time.RFC3339Nano)
	sum := sha256.Sum256(csr)
	proof, err := old.Sign(ctx, append(append([]byte(renewDomain), sum[:]...), ts...))
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]any{"certificate": certs[0], "csr": csr, "time": ts, "proof": proof})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(b.Server, "/")+"/v1/renew", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	hr, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	defer hr.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(hr.Body, 1<<20))
	if hr.StatusCode != http.StatusOK {
		var p problem
		if json.Unmarshal(rb, &p) == nil && p.Title != "" {
			return nil, fmt.Errorf("renew refused (%d %s): %s", hr.StatusCode, p.Title, p.Detail)
		}
		return nil, fmt.Errorf("renew refused: %s", hr.Status)
	}
	var resp response
	if err := json.Unmarshal(rb, &resp); err != nil {
		return nil, fmt.Errorf("renew: bad response: %w", err)
	}
	leaf, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil || !leaf.PublicKey.Equal(next.pub) {
		return nil, errors.New("renew: the certificate returned is not for the new key")
	}
	var roots, inters []*pqx509.Certificate
	for _, d := range rootsDER {
		if c, err := pqx509.ParseCertificate(d); err == nil {
			roots = append(roots, c)
		}
	}
	for _, d := range resp.Chain {
		if c, err := pqx509.ParseCertificate(d); err == nil {
			inters = append(inters, c)
		}
	}
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("renew: the new certificate does not chain to the stored roots: %w", err)
	}
	// The key first, then the certificate: a crash between leaves a key
	// without its certificate, which the next start reports (enroll again),
	// never a certificate whose key is lost.
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "AVON ML-DSA-65 SEED", Bytes: seed})
	defer clear(keyPEM)
	prevKey := filepath.Join(o.StateDir, KeyFile+".prev")
	_ = os.Rename(filepath.Join(o.StateDir, KeyFile), prevKey)
	if err := atomicfile.Write(filepath.Join(o.StateDir, KeyFile), keyPEM, 0o600); err != nil {
		_ = os.Rename(prevKey, filepath.Join(o.StateDir, KeyFile))
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(o.StateDir, CertFile), pemAll("CERTIFICATE", append([][]byte{resp.Certificate}, resp.Chain...)...), 0o600); err != nil {
		return nil, err
	}
	_ = os.Remove(prevKey)
	b.NotAfter = resp.NotAfter
	nb, _ := json.MarshalIndent(b, "", "  ")
	if err := atomicfile.Write(filepath.Join(o.StateDir, BundleFile), nb, 0o600); err != nil {
		return nil, err
	}
	return &b, nil
}
