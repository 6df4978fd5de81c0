// Package ca is the engine of the ca-dilithium plugin: an ML-DSA X.509
// hierarchy (root, issuing intermediate, and an optional classical ECDSA
// P-384 pair) whose keys live in the wired KMS plugin (or, for algorithms
// the KMS lacks such as SLH-DSA, in a pqc plugin with the private key
// wrapped under a KMS AES key), profiles, random unique serials, revocation,
// CRLs and OCSP. Certificates are encoded, linted, signed and verified by
// internal/pqx509; the engine keeps its state in the host storage.
package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/pqc"
)

// Config is what the engine needs from the plugin configuration.
type Config struct {
	Organization         string
	RootAlgorithm        string // ML-DSA-87 by default; SLH-DSA-* through a pqc plugin
	IssuingAlgorithm     string // ML-DSA-65 by default
	Classical            bool   // also an ECDSA-P384 root and issuer
	RootLifetime         time.Duration
	IntermediateLifetime time.Duration
	CRLLifetime          time.Duration
	CRLURL, OCSPURL      string
	PermittedDNSDomains  []string // name constraints on the issuing CA
	Lifetimes            map[string]time.Duration
	// Manual: Init creates no hierarchy; an operator runs Initialize
	// (avon ca init) and until then Issue, CRL, OCSP and RotateIssuer
	// return sdkca.ErrNotInitialized.
	Manual bool
}

// Engine is the CA.
type Engine struct {
	cfg      Config
	kms      kms.KMS // the default KMS
	kmsNamed func(name string) (kms.KMS, error)
	pqc      pqc.Provider // nil when none is wired
	st       host.Storage
	rand     io.Reader
	now      func(context.Context) (time.Time, error) // calibrated; an error fails closed
	audit    func(ctx context.Context, ev host.Event) error
	profiles map[string]*Profile
	// noAudited: the core has no audited storage batches (host protocol
	// minor 5); issuance writes the record and its event separately.
	noAudited atomic.Bool

	// opMu serializes the operations that change the hierarchy
	// (Initialize, RotateIssuer).
	opMu sync.Mutex
	// reloadMu serializes the reloads ListIssuers makes when the
	// epoch changed (see epoch.go) and the making of cross-certificates
	// (ensureCross).
	reloadMu sync.Mutex

	mu      sync.RWMutex
	issuers map[string]*issuer // by id (issuerRecord.Name)
	active  map[string]*issuer // by family: its highest generation
	// epoch is the version of epochKey the issuers were loaded at.
	epoch int64
	// crossDone: ensureCross found nothing left to make for these
	// issuers (made, stored by another replica, or expired).
	crossDone bool
	// listed is the ListIssuers answer for these issuers (nil: to build).
	listed []sdkca.Issuer
}

type issuer struct {
	rec    issuerRecord
	cert   *pqx509.Certificate
	signer pqx509.Signer
	chain  [][]byte // DER, this issuer first, excluding the root
	// alternates are the other chains of this issuer's key: one per
	// cross-certificate under another root (see cross.go).
	alternates [][][]byte
}

// issuerRecord is stored under issuers/<name>. Name is the generation's
// id: the family's name for generation 1 ("issuing"), "<family>.<gen>" for
// later ones ("issuing.2").
type issuerRecord struct {
	Name      string `json:"name"`
	Family    string `json:"family,omitempty"` // "" = Name (records before rotation existed)
	Algorithm string `json:"algorithm"`
	// KMS names the wired kms plugin holding KMSKey and WrapKey ("" = the
	// default), so each generation's signer is built against its own KMS.
	KMS    string `json:"kms,omitempty"`
	Parent string `json:"parent,omitempty"` // empty for a root
	KMSKey string `json:"kms_key,omitempty"`
	// For pqc-plugin keys: the private key wrapped under WrapKey.
	WrapKey    string    `json:"wrap_key,omitempty"`
	Wrapped    []byte    `json:"wrapped,omitempty"`
	PublicKey  []byte    `json:"public_key"`
	DER        []byte    `json:"der"`
	Default    bool      `json:"default"`
	CreatedAt  time.Time `json:"created_at"`
	Generation int       `json:"generation"`
}

func (r issuerRecord) family() string {
	if r.Family != "" {
		return r.Family
	}
	return r.Name
}

func (r issuerRecord) generation() int { return max(r.Generation, 1) }

// sameKey reports whether o names the same certificate and key as r: then
// r's parsed certificate and signer serve o.
func (r issuerRecord) sameKey(o issuerRecord) bool {
	return r.Name == o.Name && r.Algorithm == o.Algorithm && r.KMS == o.KMS && r.KMSKey == o.KMSKey && r.WrapKey == o.WrapKey &&
		bytes.Equal(r.Wrapped, o.Wrapped) && bytes.Equal(r.PublicKey, o.PublicKey) && bytes.Equal(r.DER, o.DER)
}

// genName is the generation's stable name, "<family>.<gen>".
func (r issuerRecord) genName() string { return fmt.Sprintf("%s.%d", r.family(), r.generation()) }

// Option configures an Engine.
type Option func(*Engine)

// WithNamedKMS gives the engine the kms plugins wired by name (host.KMSNamed):
// issuer records name theirs, RotateIssuer and Initialize take one. Without
// it only the default KMS ("") exists.
func WithNamedKMS(f func(name string) (kms.KMS, error)) Option {
	return func(e *Engine) { e.kmsNamed = f }
}

// New returns an engine; Init loads or creates the hierarchy.
func New(cfg Config, k kms.KMS, p pqc.Provider, st host.Storage, rand io.Reader, now func(context.Context) (time.Time, error),
	audit func(ctx context.Context, ev host.Event) error, opts ...Option) *Engine {
	profiles := DefaultProfiles()
	for name, d := range cfg.Lifetimes {
		if p, ok := profiles[name]; ok && d > 0 {
			p.Lifetime = d
			if d > p.MaxLifetime {
				p.MaxLifetime = d
			}
		}
	}
	e := &Engine{cfg: cfg, kms: k, pqc: p, st: st, rand: rand, now: now, audit: audit, profiles: profiles,
		issuers: map[string]*issuer{}, active: map[string]*issuer{}}
	for _, o := range opts {
		o(e)
	}
	return e
}

// kmsFor returns the named KMS ("" = the default); an unknown name wraps
// sdkca.ErrUnknownKMS and says which are wired.
func (e *Engine) kmsFor(name string) (kms.KMS, error) {
	if name == "" {
		return e.kms, nil
	}
	if e.kmsNamed == nil {
		return nil, fmt.Errorf("kms %q: only the default kms plugin is wired: %w", name, sdkca.ErrUnknownKMS)
	}
	k, err := e.kmsNamed(name)
	if errors.Is(err, host.ErrNotWired) {
		return nil, fmt.Errorf("%v: %w", err, sdkca.ErrUnknownKMS)
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

// isKMSAlgorithm reports whether the KMS signs with alg itself.
func isKMSAlgorithm(alg string) bool {
	switch kms.Algorithm(alg) {
	case kms.MLDSA44, kms.MLDSA65, kms.MLDSA87, kms.ECDSAP256, kms.ECDSAP384, kms.Ed25519:
		return true
	}
	return false
}

const wrapKeyID = "ca-wrap"

// Init loads the issuers from storage, creating the hierarchy at first
// start (unless Config.Manual): root, issuing intermediate signed by it,
// and (when configured) the classical pair.
func (e *Engine) Init(ctx context.Context) error {
	v, err := e.readEpoch(ctx)
	if err != nil {
		return err
	}
	recs, err := e.loadIssuers(ctx)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		if e.cfg.Manual {
			return nil // avon ca init makes it
		}
		if err := e.createHierarchy(ctx, ""); err != nil && !errors.Is(err, errRaced) {
			return err
		}
		if v, err = e.readEpoch(ctx); err != nil {
			return err
		}
		if recs, err = e.loadIssuers(ctx); err != nil {
			return err
		}
	}
	if err := e.activateAt(ctx, recs, v); err != nil {
		return err
	}
	// Cross-certificates missing here (a CA made before they existed, or
	// no trusted time yet) are made by the next ListIssuers.
	_, _ = e.ensureCross(ctx)
	return nil
}

// errRaced: another replica stored the record first.
var errRaced = errors.New("stored by another replica meanwhile")

func (e *Engine) createHierarchy(ctx context.Context, kmsName string) error {
	if err := e.createPair(ctx, kmsName, "root", "issuing", e.cfg.RootAlgorithm, e.cfg.IssuingAlgorithm, true); err != nil {
		return err
	}
	if e.cfg.Classical {
		return e.createPair(ctx, kmsName, "classical-root", "classical", "ECDSA-P384", "ECDSA-P384", false)
	}
	return nil
}

// Initialized reports whether the engine has a hierarchy.
func (e *Engine) Initialized() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.issuers) > 0
}

func (e *Engine) requireInit() error {
	if !e.Initialized() {
		return fmt.Errorf("no CA hierarchy yet (init = \"manual\"): %w", sdkca.ErrNotInitialized)
	}
	return nil
}

func (e *Engine) loadIssuers(ctx context.Context) ([]issuerRecord, error) {
	es, err := e.st.List(ctx, host.ListOptions{Prefix: issuerPrefix, Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("load issuers: %w", err)
	}
	out := make([]issuerRecord, 0, len(es))
	for _, en := range es {
		var r issuerRecord
		if err := json.Unmarshal(en.Value, &r); err != nil {
			return nil, fmt.Errorf("issuer record %s is corrupt: %v", en.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// activate parses the issuer certificates and builds their signers.
func (e *Engine) activate(ctx context.Context, recs []issuerRecord) error {
	e.mu.RLock()
	loaded := e.issuers
	e.mu.RUnlock()
	m := map[string]*issuer{}
	for _, r := range recs {
		// A record already loaded keeps its parsed certificate and
		// signer (the KMS was asked for its key when it was loaded).
		if is, ok := loaded[r.Name]; ok && is.rec.sameKey(r) {
			m[r.Name] = &issuer{rec: r, cert: is.cert, signer: is.signer}
			continue
		}
		cert, err := pqx509.ParseCertificate(r.DER)
		if err != nil {
			return fmt.Errorf("issuer %s certificate: %w", r.Name, err)
		}
		s, err := e.signerFor(ctx, r)
		if err != nil {
			return err
		}
		if !s.Public().Equal(cert.PublicKey) {
			return fmt.Errorf("issuer %s: the key in the KMS is not the certificate's key", r.Name)
		}
		m[r.Name] = &issuer{rec: r, cert: cert, signer: s}
	}
	active := map[string]*issuer{}
	for _, is := range m {
		for p := is; p != nil && p.rec.Parent != ""; p = m[p.rec.Parent] {
			is.chain = append(is.chain, p.rec.DER)
		}
		if cur, ok := active[is.rec.family()]; !ok || is.rec.generation() > cur.rec.generation() {
			active[is.rec.family()] = is
		}
	}
	cross, err := e.loadCross(ctx)
	if err != nil {
		return err
	}
	attachCross(m, cross)
	e.mu.Lock()
	e.issuers, e.active = m, active
	e.crossDone, e.listed = false, nil
	e.mu.Unlock()
	return nil
}

// resolveLocked finds an issuer by the names ListIssuers gives: a family
// ("issuing": its active generation), "<family>.<gen>" ("issuing.1"), or a
// generation's id. Caller must hold e.mu.
func (e *Engine) resolveLocked(name string) (*issuer, bool) {
	if is, ok := e.active[name]; ok {
		return is, true
	}
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		if g, err := strconv.Atoi(name[i+1:]); err == nil {
			for _, is := range e.issuers {
				if is.rec.family() == name[:i] && is.rec.generation() == g {
					return is, true
				}
			}
		}
	}
	is, ok := e.issuers[name]
	return is, ok
}

// publicNameLocked is the name ListIssuers gives a generation: the family's
// for the active one, "<family>.<gen>" for the others. Caller must hold e.mu.
func (e *Engine) publicNameLocked(is *issuer) string {
	if e.active[is.rec.family()] == is {
		return is.rec.family()
	}
	return is.rec.genName()
}

func (e *Engine) signerFor(ctx context.Context, r issuerRecord) (pqx509.Signer, error) {
	k, err := e.kmsFor(r.KMS)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: its key is in kms %q: %w", r.Name, r.KMS, err)
	}
	if r.KMSKey != "" {
		return newKMSSigner(ctx, k, r.KMSKey)
	}
	if e.pqc == nil {
		return nil, fmt.Errorf("issuer %s uses %s, which needs the pqc plugin it was created with", r.Name, r.Algorithm)
	}
	return &pqcSigner{kms: k, pqc: e.pqc, alg: r.Algorithm, wrapKey: r.WrapKey, wrapped: r.Wrapped,
		aad: []byte("avon-ca-issuer-key/" + r.Name), pub: pqx509.PublicKey{Algorithm: r.Algorithm, Raw: r.PublicKey}}, nil
}

// newIssuerKey makes the key of a new issuer (generation gen of family
// name) in the named KMS and returns its record (key fields filled) and
// signer.
func (e *Engine) newIssuerKey(ctx context.Context, kmsName, name, alg string, gen int) (issuerRecord, pqx509.Signer, error) {
	r := issuerRecord{Name: name, Family: name, Algorithm: alg, Generation: gen, KMS: kmsName}
	if gen > 1 {
		r.Name = fmt.Sprintf("%s.%d", name, gen)
	}
	k, err := e.kmsFor(kmsName)
	if err != nil {
		return r, nil, err
	}
	if isKMSAlgorithm(alg) {
		r.KMSKey = fmt.Sprintf("ca-%s-%d", name, gen)
		if err := ensureKMSKey(ctx, k, r.KMSKey, kms.Algorithm(alg), map[string]string{"avon.purpose": "ca-issuer", "avon.issuer": name}); err != nil {
			return r, nil, err
		}
	} else {
		if err := ensureKMSKey(ctx, k, wrapKeyID, kms.AES256, map[string]string{"avon.purpose": "ca-key-wrap"}); err != nil {
			return r, nil, err
		}
		pub, wrapped, err := generatePQCKey(ctx, k, e.pqc, alg, wrapKeyID, []byte("avon-ca-issuer-key/"+r.Name))
		if err != nil {
			return r, nil, err
		}
		r.WrapKey, r.Wrapped, r.PublicKey = wrapKeyID, wrapped, pub
	}
	s, err := e.signerFor(ctx, r)
	if err != nil {
		return r, nil, err
	}
	r.PublicKey = s.Public().Raw
	return r, s, nil
}

func (e *Engine) name(cn string) pkix.Name {
	n := pkix.Name{CommonName: cn}
	if e.cfg.Organization != "" {
		n.Organization = []string{e.cfg.Organization}
	}
	return n
}

// createPair makes a root and an issuing intermediate signed by it, keys in
// the named KMS. errRaced when another replica stored them first.
func (e *Engine) createPair(ctx context.Context, kmsName, rootName, issName, rootAlg, issAlg string, def bool) error {
	now, err := e.trustedNow(ctx)
	if err != nil {
		return err
	}
	rootRec, rootSigner, err := e.newIssuerKey(ctx, kmsName, rootName, rootAlg, 1)
	if err != nil {
		return fmt.Errorf("root key: %w", err)
	}
	serial, err := newSerialInt(e.rand)
	if err != nil {
		return err
	}
	rootTmpl := &pqx509.Template{SerialNumber: serial, Subject: e.name(e.cfg.Organization + " " + rootName + " CA"),
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(e.cfg.RootLifetime), PublicKey: rootSigner.Public(),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1}
	rootDER, err := pqx509.CreateCertificate(ctx, rootTmpl, nil, rootSigner)
	if err != nil {
		return fmt.Errorf("root certificate: %w", err)
	}
	rootCert, err := pqx509.ParseCertificate(rootDER)
	if err != nil {
		return err
	}
	rootRec.DER, rootRec.CreatedAt = rootDER, now
	issRec, issSigner, err := e.newIssuerKey(ctx, kmsName, issName, issAlg, 1)
	if err != nil {
		return fmt.Errorf("issuing key: %w", err)
	}
	issDER, err := e.signIntermediate(ctx, issName, issSigner.Public(), rootCert, rootSigner, 1)
	if err != nil {
		return err
	}
	issRec.DER, issRec.Parent, issRec.Default, issRec.CreatedAt = issDER, rootName, def, now
	for _, r := range []issuerRecord{rootRec, issRec} {
		b, _ := json.Marshal(r)
		if _, err := e.st.Put(ctx, issuerPrefix+r.Name, b, host.PutOptions{Check: true}); err != nil {
			if errors.Is(err, host.ErrVersionConflict) {
				return errRaced // another replica initialized the CA meanwhile; load its
			}
			return fmt.Errorf("store issuer %s: %w", r.Name, err)
		}
	}
	if err := e.bumpEpoch(ctx, "init "+rootName+" "+issName); err != nil {
		return err
	}
	return e.emit(ctx, host.Event{Action: "ca.init", Target: "issuer/" + issName, Outcome: "success",
		Fields: map[string]string{"root": rootName, "root_algorithm": rootAlg, "algorithm": issAlg, "kms": kmsLabel(kmsName)}})
}

func (e *Engine) signIntermediate(ctx context.Context, name string, pub pqx509.PublicKey, parent *pqx509.Certificate,
	parentSigner pqx509.Signer, gen int) ([]byte, error) {
	now, err := e.trustedNow(ctx)
	if err != nil {
		return nil, err
	}
	serial, err := newSerialInt(e.rand)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(e.cfg.IntermediateLifetime)
	if notAfter.After(parent.NotAfter) {
		notAfter = parent.NotAfter
	}
	t := &pqx509.Template{SerialNumber: serial, Subject: e.name(fmt.Sprintf("%s %s CA %d", e.cfg.Organization, name, gen)),
		NotBefore: now.Add(-time.Minute), NotAfter: notAfter, PublicKey: pub,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
		PermittedDNSDomains: e.cfg.PermittedDNSDomains}
	if e.cfg.CRLURL != "" {
		t.CRLDistributionPoints = []string{e.cfg.CRLURL}
	}
	der, err := pqx509.CreateCertificate(ctx, t, parent, parentSigner)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate %s: %w", name, err)
	}
	return der, nil
}

func newSerialInt(r io.Reader) (*big.Int, error) {
	s, err := newSerial(r)
	if err != nil {
		return nil, err
	}
	n, _ := new(big.Int).SetString(s, 16)
	return n, nil
}

// trustedNow is calibrated time to the second; without a fresh calibration
// nothing time-dependent is signed.
func (e *Engine) trustedNow(ctx context.Context) (time.Time, error) {
	t, err := e.now(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("no trusted time, refusing to sign: %w", err)
	}
	return t.UTC().Truncate(time.Second), nil
}

func (e *Engine) emit(ctx context.Context, ev host.Event) error {
	if e.audit == nil {
		return nil
	}
	return e.audit(ctx, ev)
}

// kmsLabel names a KMS in audit fields and messages.
func kmsLabel(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

// issuerFor returns the named issuer, or the profile's default: the active
// generation of its family. Earlier generations issue nothing.
func (e *Engine) issuerFor(name string, p *Profile, keyAlg string) (*issuer, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if name == "" {
		name = p.Issuer
		// A classical key is issued by the classical issuer when there
		// is one, so TLS clients without ML-DSA can verify its chain.
		if !strings.HasPrefix(keyAlg, "ML-DSA") && !strings.HasPrefix(keyAlg, "SLH-DSA") {
			if _, ok := e.active["classical"]; ok {
				name = "classical"
			}
		}
		for _, is := range e.active {
			if is.rec.Default && name == "issuing" {
				name = is.rec.family()
			}
		}
	}
	is, ok := e.resolveLocked(name)
	if !ok || is.rec.Parent == "" {
		return nil, fmt.Errorf("issuer %q: %w", name, sdkca.ErrUnknownIssuer)
	}
	if e.active[is.rec.family()] != is {
		return nil, fmt.Errorf("issuer %q is generation %d of %s, retired by generation %d: it signs CRLs and OCSP only: %w",
			name, is.rec.generation(), is.rec.family(), e.active[is.rec.family()].rec.generation(), sdkca.ErrUnknownIssuer)
	}
	return is, nil
}

// Issue signs a certificate for a CSR (or a bare public key) under a
// profile.
func (e *Engine) Issue(ctx context.Context, req *sdkca.IssueRequest) (*sdkca.IssueResponse, error) {
	if err := e.requireInit(); err != nil {
		return nil, err
	}
	pr, err := e.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	return e.sign(ctx, pr, nil)
}

// prepared is an issuance request that passed the checks: what to
// certify, by which issuer, and the trusted time being fetched.
type prepared struct {
	p        *Profile
	names    Names
	pub      pqx509.PublicKey
	lifetime time.Duration
	is       *issuer
	nowc     <-chan timeResult
}

// prepare checks req against its profile and picks the issuer. The
// trusted time (a host round trip when the reused reading is stale) is
// asked once the cheap checks passed, in parallel with the CSR's parsing
// and signature check; sign reads it.
func (e *Engine) prepare(ctx context.Context, req *sdkca.IssueRequest) (*prepared, error) {
	p, ok := e.profiles[req.Profile]
	if !ok {
		return nil, fmt.Errorf("profile %q (known: %s): %w", req.Profile, strings.Join(e.profileNames(), ", "), sdkca.ErrUnknownProfile)
	}
	names := Names{CommonName: req.CommonName, DNS: req.DNSNames}
	for _, s := range req.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, &PolicyError{Profile: p.Name, Reason: fmt.Sprintf("IP address %q is not an IP address", s)}
		}
		names.IPs = append(names.IPs, ip)
	}
	for _, s := range req.URIs {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return nil, &PolicyError{Profile: p.Name, Reason: fmt.Sprintf("URI %q is not an absolute URI", s)}
		}
		names.URIs = append(names.URIs, u)
	}
	nowc := make(chan timeResult, 1)
	go func() {
		t, err := e.trustedNow(ctx)
		nowc <- timeResult{t, err}
	}()
	var pub pqx509.PublicKey
	switch {
	case len(req.CSR) > 0:
		csr, err := pqx509.ParseCSR(req.CSR)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, sdkca.ErrBadCSR)
		}
		if csr.RequestsCA {
			return nil, &PolicyError{Profile: p.Name, Reason: "the CSR requests a CA certificate (cA=TRUE)"}
		}
		if err := csr.Validate(pqx509.DefaultVerifier); err != nil {
			return nil, fmt.Errorf("CSR: %v: %w", err, sdkca.ErrBadCSR)
		}
		pub = csr.PublicKey
		// Names come from the CSR unless the request names them: then
		// the CSR must not ask for more.
		if len(req.DNSNames)+len(req.IPAddresses)+len(req.URIs) == 0 {
			names.DNS, names.IPs, names.URIs, names.Emails = csr.DNSNames, csr.IPAddresses, csr.URIs, csr.EmailAddresses
		} else if extra := beyond(csr, names); extra != "" {
			return nil, &PolicyError{Profile: p.Name, Reason: "the CSR asks for names the request does not: " + extra}
		}
		if names.CommonName == "" {
			names.CommonName = csr.Subject.CommonName
		}
	case len(req.PublicKey) > 0:
		pub = pqx509.PublicKey{Algorithm: req.PublicKeyAlgorithm, Raw: req.PublicKey}
		if _, err := pqx509.MarshalSPKI(pub); err != nil {
			return nil, fmt.Errorf("public key: %v: %w", err, sdkca.ErrBadCSR)
		}
	default:
		return nil, fmt.Errorf("neither a CSR nor a public key: %w", sdkca.ErrBadCSR)
	}
	lifetime, err := p.Check(names, pub.Algorithm, req.Lifetime)
	if err != nil {
		return nil, err
	}
	is, err := e.issuerFor(req.Issuer, p, pub.Algorithm)
	if err != nil {
		return nil, err
	}
	return &prepared{p: p, names: names, pub: pub, lifetime: lifetime, is: is, nowc: nowc}, nil
}

// sign issues what prepare checked and records it (under o's key when o
// is not nil). With o, a key another request recorded meanwhile ends in
// errOnceTaken: this certificate is then neither stored nor returned.
func (e *Engine) sign(ctx context.Context, pr *prepared, o *once) (*sdkca.IssueResponse, error) {
	tr := <-pr.nowc
	if tr.err != nil {
		return nil, tr.err
	}
	p, names, is := pr.p, pr.names, pr.is
	now := tr.t
	notAfter := now.Add(pr.lifetime)
	if notAfter.After(is.cert.NotAfter) {
		notAfter = is.cert.NotAfter // never outlive the issuer
	}
	rec := Record{Issuer: is.rec.Name, Profile: p.Name, Subject: names.CommonName,
		SANs: sanStrings(names), KeyAlg: pr.pub.Algorithm, NotBefore: now.Add(-time.Minute), NotAfter: notAfter, IssuedAt: now}
	// One store write per certificate: sign under a fresh random serial,
	// then store it create-only. A taken serial (a 2^-127 event, or a
	// broken generator) means drawing another and signing again; a serial
	// is never handed out twice, across replicas too. The record and its
	// audit event are one transaction when the core offers it
	// (host.AuditedApplier); see storeIssued for older cores. The
	// certificate is handed out only when both are durable.
	var der []byte
	for attempt := 0; ; attempt++ {
		if attempt == 4 {
			return nil, errors.New("serial: 4 collisions in a row; the random generator is broken")
		}
		sn, err := newSerial(e.rand)
		if err != nil {
			return nil, err
		}
		serial, _ := new(big.Int).SetString(sn, 16)
		t := &pqx509.Template{SerialNumber: serial, Subject: pkix.Name{CommonName: names.CommonName}, NotBefore: rec.NotBefore, NotAfter: notAfter,
			PublicKey: pr.pub, KeyUsage: p.KeyUsage, ExtKeyUsage: p.ExtKeyUsage, BasicConstraintsValid: true,
			DNSNames: names.DNS, IPAddresses: names.IPs, URIs: names.URIs, EmailAddresses: names.Emails}
		if e.cfg.CRLURL != "" {
			t.CRLDistributionPoints = []string{e.cfg.CRLURL}
		}
		if e.cfg.OCSPURL != "" {
			t.OCSPServer = []string{e.cfg.OCSPURL}
		}
		if der, err = pqx509.CreateCertificate(ctx, t, is.cert, is.signer); err != nil {
			return nil, fmt.Errorf("issue: %w", err)
		}
		rec.Serial, rec.DER, rec.Status = sn, der, string(sdkca.StatusGood)
		b, _ := json.Marshal(rec)
		ev := host.Event{Action: "ca.issue", Target: "cert/" + sn, Outcome: "success",
			Fields: map[string]string{"profile": p.Name, "issuer": is.rec.Name, "subject": names.CommonName}}
		if o != nil {
			err = e.storeIssuedOnce(ctx, certPrefix+sn, b, ev, o)
		} else {
			err = e.storeIssued(ctx, certPrefix+sn, b, ev)
		}
		if errors.Is(err, host.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	return &sdkca.IssueResponse{Certificate: der, Chain: is.chain, Serial: rec.Serial, NotBefore: rec.NotBefore, NotAfter: notAfter}, nil
}

// storeIssued stores a certificate record create-only under key and
// records ev, its issuance. With a core of host protocol minor 5 the two
// are one transaction (host.AuditedApplier): both or neither, one commit;
// the event then goes to the audit log of the storage's host, which must
// be the host the engine's audit function reports to (the plugin wires
// both from one host; an engine without an audit function records
// nothing). Otherwise the event is written concurrently with the record (two durable
// writes in the time of one): a certificate not on record is not issued,
// and an event whose record was not stored is followed by a failure event
// for that serial. A taken serial wraps host.ErrVersionConflict.
func (e *Engine) storeIssued(ctx context.Context, key string, b []byte, ev host.Event) error {
	if aa, ok := e.st.(host.AuditedApplier); ok && e.audit != nil && !e.noAudited.Load() {
		_, err := aa.ApplyAudited(ctx, []host.Op{{Key: key, Value: b, Check: true}}, ev)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, host.ErrVersionConflict):
			return err // nothing stored, nothing recorded
		case errors.Is(err, errdef.ErrNotImplemented):
			e.noAudited.Store(true) // an older core: separate writes from now on
		default:
			return fmt.Errorf("store certificate %s with its audit event: %w", ev.Target, err)
		}
	}
	auditc := make(chan error, 1)
	go func() { auditc <- e.emit(ctx, ev) }()
	_, err := e.st.Put(ctx, key, b, host.PutOptions{Check: true})
	auditErr := <-auditc
	if err != nil {
		if auditErr == nil {
			reason := "the certificate record was not stored: not issued"
			if errors.Is(err, host.ErrVersionConflict) {
				reason = "serial taken: not issued under it"
			}
			// The success event is on record: the failure must follow
			// it even when the request's context is what ended the
			// write.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = e.emit(fctx, host.Event{Action: ev.Action, Target: ev.Target, Outcome: "failure", Reason: reason, Fields: ev.Fields})
			cancel()
		}
		if errors.Is(err, host.ErrVersionConflict) {
			return err
		}
		return fmt.Errorf("store certificate %s: %w", strings.TrimPrefix(ev.Target, "cert/"), err)
	}
	if auditErr != nil {
		return fmt.Errorf("audit: %w", auditErr) // not on record: not handed out
	}
	return nil
}

// timeResult is a trustedNow answer.
type timeResult struct {
	t   time.Time
	err error
}

// beyond names what the CSR asks for that names does not include.
func beyond(csr *pqx509.CSR, n Names) string {
	want := map[string]bool{}
	for _, s := range sanStrings(n) {
		want[s] = true
	}
	var extra []string
	for _, s := range sanStrings(Names{DNS: csr.DNSNames, IPs: csr.IPAddresses, URIs: csr.URIs, Emails: csr.EmailAddresses}) {
		if !want[s] {
			extra = append(extra, s)
		}
	}
	return strings.Join(extra, ", ")
}

func sanStrings(n Names) []string {
	var out []string
	for _, d := range n.DNS {
		out = append(out, "dns:"+d)
	}
	for _, ip := range n.IPs {
		out = append(out, "ip:"+ip.String())
	}
	for _, u := range n.URIs {
		out = append(out, "uri:"+u.String())
	}
	for _, m := range n.Emails {
		out = append(out, "email:"+m)
	}
	return out
}

func (e *Engine) profileNames() []string {
	var out []string
	for n := range e.profiles {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Revoke marks a certificate revoked with an RFC 5280 reason.
func (e *Engine) Revoke(ctx context.Context, req *sdkca.RevokeRequest) (*sdkca.RevokeResponse, error) {
	if req.Reason < 0 || req.Reason > 10 || req.Reason == 7 {
		return nil, fmt.Errorf("revocation reason %d is not an RFC 5280 CRLReason: %w", req.Reason, sdkca.ErrPolicyViolation)
	}
	rec, version, err := e.getRecord(ctx, req.Serial)
	if err != nil {
		return nil, err
	}
	if rec.Status == string(sdkca.StatusRevoked) {
		return nil, fmt.Errorf("serial %s revoked at %s: %w", rec.Serial, rec.RevokedAt.Format(time.RFC3339), sdkca.ErrAlreadyRevoked)
	}
	at := req.Time
	if at.IsZero() {
		if at, err = e.trustedNow(ctx); err != nil {
			return nil, err
		}
	}
	rec.Status, rec.RevokedAt, rec.Reason = string(sdkca.StatusRevoked), at.UTC().Truncate(time.Second), req.Reason
	b, _ := json.Marshal(rec)
	if _, err := e.st.Put(ctx, certPrefix+rec.Serial, b, host.PutOptions{Check: true, Version: version}); err != nil {
		if errors.Is(err, host.ErrVersionConflict) {
			return nil, fmt.Errorf("serial %s changed meanwhile: %w", rec.Serial, sdkca.ErrAlreadyRevoked)
		}
		return nil, err
	}
	if _, err := e.st.Put(ctx, revokedPrefix+rec.Issuer+"/"+rec.Serial, []byte(rec.Serial), host.PutOptions{}); err != nil {
		return nil, fmt.Errorf("revocation index: %w", err)
	}
	_ = e.st.Delete(ctx, crlPrefix+rec.Issuer, host.DeleteOptions{}) // the cached CRL is stale now
	if err := e.emit(ctx, host.Event{Action: "ca.revoke", Target: "cert/" + rec.Serial, Outcome: "success",
		Fields: map[string]string{"issuer": rec.Issuer, "reason": fmt.Sprint(req.Reason)}}); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &sdkca.RevokeResponse{}, nil
}

func (e *Engine) getRecord(ctx context.Context, serial string) (Record, int64, error) {
	return getRecord(ctx, e.st, serial)
}

// GetCertificate returns a certificate and its status.
func (e *Engine) GetCertificate(ctx context.Context, req *sdkca.GetCertificateRequest) (*sdkca.GetCertificateResponse, error) {
	rec, _, err := e.getRecord(ctx, req.Serial)
	if err != nil {
		return nil, err
	}
	return &sdkca.GetCertificateResponse{Certificate: rec.DER, Status: sdkca.Status(rec.Status), RevokedAt: rec.RevokedAt, RevocationReason: rec.Reason}, nil
}

// keyHash is SHA-256 of a key, for cache keys and OCSP responder ids.
func keyHash(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
