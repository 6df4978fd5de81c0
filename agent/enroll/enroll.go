// Package enroll is the agent's side of enrollment: it makes the agent's
// ML-DSA-65 key (from the agent's own SP 800-90A DRBG), sends a CSR with a
// one-time token to the core's POST /v1/enroll, checks what comes back
// (the certificate is for this key and chains to the roots returned), and
// stores the key, the certificate chain, the roots and the bundle in the
// state directory, every file 0600 in a 0700 directory.
//
// The connection to the core is pinned: by the SHA-256 of the core's API
// certificate (printed by `avon server`) or by a CA file, never by trust on
// first use.
package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

// Files in the state directory.
const (
	KeyFile    = "agent.key"   // PEM "AVON ML-DSA-65 SEED"
	CertFile   = "agent.crt"   // PEM chain: the agent certificate, then issuers
	RootsFile  = "roots.pem"   // PEM trust anchors
	BundleFile = "bundle.json" // Bundle
	// GatewayFile is the gateway's certificate (PEM), which the tunnel
	// handshake checks the gateway against.
	GatewayFile = "gateway.crt"
)

// Bundle is what the agent needs besides its key and certificates.
type Bundle struct {
	Server   string    `json:"server"`
	AgentID  string    `json:"agent_id"`
	Group    string    `json:"group"`
	Gateway  string    `json:"gateway"`
	CRLURL   string    `json:"crl_url"`
	OCSPURL  string    `json:"ocsp_url"`
	NotAfter time.Time `json:"not_after"`
	Enrolled time.Time `json:"enrolled"`
}

// Options are the inputs of Enroll.
type Options struct {
	Server   string // https://host:port of the core's API
	Token    string
	StateDir string
	// Exactly one of ServerFingerprint (hex SHA-256 of the API's TLS
	// certificate) and CAFile pins the connection.
	ServerFingerprint string
	CAFile            string
	Rand              io.Reader // the agent's DRBG
	Timeout           time.Duration
}

// Response mirrors the core's EnrollResponse.
type response struct {
	AgentID     string    `json:"agent_id"`
	Group       string    `json:"group"`
	Certificate []byte    `json:"certificate"`
	Chain       [][]byte  `json:"chain"`
	Roots       [][]byte  `json:"roots"`
	NotAfter    time.Time `json:"not_after"`
	CRLURL      string    `json:"crl_url"`
	OCSPURL     string    `json:"ocsp_url"`
	Gateway     string    `json:"gateway"`
	GatewayCert []byte    `json:"gateway_certificate"`
}

type problem struct {
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

type seedSigner struct {
	sk  *mldsa65.PrivateKey
	pub pqx509.PublicKey
}

func (s *seedSigner) Public() pqx509.PublicKey { return s.pub }
func (s *seedSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(s.sk, msg, nil, true, sig)
}

func (o *Options) client() (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	switch {
	case o.ServerFingerprint != "" && o.CAFile != "":
		return nil, errors.New("give --server-fingerprint or --ca-file, not both")
	case o.ServerFingerprint != "":
		want, err := hex.DecodeString(strings.ReplaceAll(strings.ToLower(o.ServerFingerprint), ":", ""))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("server fingerprint %q: want 64 hex digits (SHA-256)", o.ServerFingerprint)
		}
		// The pin replaces chain verification: the one certificate the
		// operator named is accepted, nothing else.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the server sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("server certificate fingerprint %x does not match the pinned %x", got, want)
			}
			return nil
		}
	case o.CAFile != "":
		pemBytes, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s: no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	default:
		return nil, errors.New("pin the server: --server-fingerprint <sha256 printed by `avon server`> or --ca-file <pem>")
	}
	t := o.Timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	return &http.Client{Timeout: t, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// Enroll runs the enrollment and returns the stored bundle.
func Enroll(ctx context.Context, o Options) (*Bundle, error) {
	if o.Token == "" || o.Server == "" || o.StateDir == "" {
		return nil, errors.New("server, token and state dir are required")
	}
	if !strings.HasPrefix(o.Server, "https://") {
		return nil, fmt.Errorf("server %q: want https://host:port", o.Server)
	}
	if _, err := os.Stat(filepath.Join(o.StateDir, KeyFile)); err == nil {
		return nil, fmt.Errorf("%s already holds an enrolled agent; remove it to enroll again", o.StateDir)
	}
	client, err := o.client()
	if err != nil {
		return nil, err
	}
	seed := make([]byte, mldsa65.SeedSize)
	if _, err := io.ReadFull(o.Rand, seed); err != nil {
		return nil, fmt.Errorf("agent key: randomness: %w", err)
	}
	defer clear(seed)
	var sd [mldsa65.SeedSize]byte
	copy(sd[:], seed)
	pk, sk := mldsa65.NewKeyFromSeed(&sd)
	clear(sd[:])
	raw, _ := pk.MarshalBinary()
	signer := &seedSigner{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}}
	csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{}, signer)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	body, _ := json.Marshal(map[string]any{"token": o.Token, "csr": csr})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(o.Server, "/")+"/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Avon-Timestamp", time.Now().UTC().Format(time.RFC3339Nano))
	hr, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer hr.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(hr.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if hr.StatusCode != http.StatusOK {
		var p problem
		if json.Unmarshal(rb, &p) == nil && p.Title != "" {
			return nil, fmt.Errorf("enroll refused (%d %s): %s", hr.StatusCode, p.Title, p.Detail)
		}
		return nil, fmt.Errorf("enroll refused: %s", hr.Status)
	}
	var resp response
	if err := json.Unmarshal(rb, &resp); err != nil {
		return nil, fmt.Errorf("enroll: bad response: %w", err)
	}
	// Check what came back before keeping it.
	leaf, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil {
		return nil, fmt.Errorf("enroll: certificate: %w", err)
	}
	if !leaf.PublicKey.Equal(signer.pub) {
		return nil, errors.New("enroll: the certificate is not for this agent's key")
	}
	var roots, inters []*pqx509.Certificate
	for _, d := range resp.Roots {
		c, err := pqx509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("enroll: root: %w", err)
		}
		roots = append(roots, c)
	}
	for _, d := range resp.Chain {
		c, err := pqx509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("enroll: chain: %w", err)
		}
		inters = append(inters, c)
	}
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("enroll: the certificate does not chain to the roots sent: %w", err)
	}
	if len(resp.GatewayCert) > 0 {
		gw, err := pqx509.ParseCertificate(resp.GatewayCert)
		if err == nil {
			_, err = pqx509.Verify(gw, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: time.Now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		}
		if err != nil {
			return nil, fmt.Errorf("enroll: the gateway certificate does not verify: %w", err)
		}
	}
	b := &Bundle{Server: o.Server, AgentID: resp.AgentID, Group: resp.Group, Gateway: resp.Gateway, CRLURL: resp.CRLURL,
		OCSPURL: resp.OCSPURL, NotAfter: resp.NotAfter, Enrolled: time.Now().UTC()}
	if err := store(o.StateDir, seed, resp, b); err != nil {
		return nil, err
	}
	return b, nil
}

func pemAll(typ string, ders ...[]byte) []byte {
	var buf bytes.Buffer
	for _, d := range ders {
		if len(d) == 0 {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: typ, Bytes: d})
	}
	return buf.Bytes()
}

func store(dir string, seed []byte, resp response, b *Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "AVON ML-DSA-65 SEED", Bytes: seed})
	defer clear(keyPEM)
	bj, _ := json.MarshalIndent(b, "", "  ")
	for _, f := range []struct {
		name string
		data []byte
	}{
		{CertFile, pemAll("CERTIFICATE", append([][]byte{resp.Certificate}, resp.Chain...)...)},
		{RootsFile, pemAll("CERTIFICATE", resp.Roots...)},
		{BundleFile, bj},
		{GatewayFile, pemAll("CERTIFICATE", resp.GatewayCert)},
		{KeyFile, keyPEM}, // last: its presence means "enrolled"
	} {
		if len(f.data) == 0 {
			continue // no gateway certificate yet
		}
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("store %s: %w", f.name, err)
		}
	}
	return nil
}
