package ca

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// rotationAlgorithms are the algorithms a new generation may use, by the
// kind of the issuer's current one: a post-quantum issuer stays ML-DSA, a
// classical one ECDSA, so its chains verify where they did.
func rotationAlgorithms(current string) []string {
	if strings.HasPrefix(current, "ECDSA") {
		return []string{"ECDSA-P256", "ECDSA-P384"}
	}
	return []string{"ML-DSA-44", "ML-DSA-65", "ML-DSA-87"}
}

// RotateIssuer makes the next generation of an issuing CA: a key
// ca-<issuer>-<gen> in the named KMS, a certificate from the same parent
// (whose key stays where it is), the record stored create-only with the KMS
// name in it, audited (ca.rotate), then issuance switched to it in one
// step. The earlier generations stay loaded: they sign the CRLs and OCSP
// responses of what they issued.
func (e *Engine) RotateIssuer(ctx context.Context, req *sdkca.RotateRequest) (*sdkca.RotateResponse, error) {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	if err := e.requireInit(); err != nil {
		return nil, err
	}
	name := req.Issuer
	if name == "" {
		name = "issuing"
	}
	e.mu.RLock()
	cur, ok := e.active[name]
	var parent *issuer
	if ok {
		parent = e.issuers[cur.rec.Parent]
	}
	e.mu.RUnlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("rotate %q: name an issuer (avon ca info lists them), not a generation: %w", name, sdkca.ErrUnknownIssuer)
	case cur.rec.Parent == "":
		return nil, fmt.Errorf("rotate %q: rotating a root CA is not supported (a new root is a new trust anchor to distribute; rotate its issuing CAs): %w",
			name, errdef.ErrNotImplemented)
	case parent == nil:
		return nil, fmt.Errorf("rotate %q: its parent %q is not loaded", name, cur.rec.Parent)
	}
	alg := req.Algorithm
	if alg == "" {
		alg = cur.rec.Algorithm
	}
	if allowed := rotationAlgorithms(cur.rec.Algorithm); !contains(allowed, alg) {
		return nil, fmt.Errorf("rotate %q: algorithm %s not allowed for a %s issuer (allowed: %s): %w",
			name, alg, cur.rec.Algorithm, strings.Join(allowed, ", "), sdkca.ErrPolicyViolation)
	}
	if _, err := e.kmsFor(req.KMS); err != nil {
		return nil, fmt.Errorf("rotate %q: %w", name, err)
	}
	gen := e.nextGeneration(name)
	rec, signer, err := e.newIssuerKey(ctx, req.KMS, name, alg, gen)
	if err != nil {
		return nil, fmt.Errorf("rotate %q: key of generation %d: %w", name, gen, err)
	}
	der, err := e.signIntermediate(ctx, name, signer.Public(), parent.cert, parent.signer, gen)
	if err != nil {
		return nil, err
	}
	cert, err := pqx509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	now, err := e.trustedNow(ctx)
	if err != nil {
		return nil, err
	}
	rec.DER, rec.Parent, rec.Default, rec.CreatedAt = der, cur.rec.Parent, cur.rec.Default, now
	b, _ := json.Marshal(rec)
	version, err := e.st.Put(ctx, issuerPrefix+rec.Name, b, host.PutOptions{Check: true})
	if errors.Is(err, host.ErrVersionConflict) {
		return nil, fmt.Errorf("rotate %q: generation %d was stored by another replica meanwhile; restart this one to load it: %w",
			name, gen, host.ErrVersionConflict)
	}
	if err != nil {
		return nil, fmt.Errorf("store issuer %s: %w", rec.Name, err)
	}
	serial := fmt.Sprintf("%032x", cert.SerialNumber)
	if err := e.emit(ctx, host.Event{Action: "ca.rotate", Target: "issuer/" + rec.Name, Outcome: "success",
		Fields: map[string]string{"issuer": name, "generation": fmt.Sprint(gen), "previous": cur.rec.Name, "kms": kmsLabel(req.KMS),
			"key": rec.KMSKey, "algorithm": alg, "serial": serial}}); err != nil {
		// Not on record: not in effect.
		_ = e.st.Delete(ctx, issuerPrefix+rec.Name, host.DeleteOptions{Check: true, Version: version})
		return nil, fmt.Errorf("audit: %w", err)
	}
	// The other replicas load the new generation at their next
	// ListIssuers once the epoch moved (the core calls it on every
	// replica when ca.rotated arrives).
	var bumpErr error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		if bumpErr = e.bumpEpoch(ctx, "rotate "+rec.Name); bumpErr == nil || ctx.Err() != nil {
			break
		}
	}
	if err := e.load(ctx); err != nil {
		// bumpEpoch may have taken the new epoch as loaded: make the next
		// ListIssuers load it.
		e.mu.Lock()
		e.epoch = -1
		e.mu.Unlock()
		return nil, err
	}
	if bumpErr != nil {
		return nil, fmt.Errorf("generation %d of %s is stored, audited and signs here (do not rotate again), but other replicas were not told (they load it at their next restart): %w",
			gen, name, bumpErr)
	}
	// The new generation's cross-certificates; ListIssuers retries
	// what fails here.
	_, _ = e.ensureCross(ctx)
	return &sdkca.RotateResponse{Issuer: name, Generation: gen, Serial: serial, KMS: req.KMS, Algorithm: alg, NotAfter: cert.NotAfter,
		Certificate: der}, nil
}

// nextGeneration is one more than the highest generation of the family.
func (e *Engine) nextGeneration(family string) int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	g := 0
	for _, is := range e.issuers {
		if is.rec.family() == family {
			g = max(g, is.rec.generation())
		}
	}
	return g + 1
}

// Initialize creates the hierarchy of a CA configured with init = "manual",
// keys in the named KMS.
func (e *Engine) Initialize(ctx context.Context, req *sdkca.InitializeRequest) (*sdkca.InitializeResponse, error) {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	if e.Initialized() {
		return nil, fmt.Errorf("the CA has a hierarchy: %w", sdkca.ErrAlreadyInitialized)
	}
	if _, err := e.kmsFor(req.KMS); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	recs, err := e.loadIssuers(ctx)
	if err != nil {
		return nil, err
	}
	raced := len(recs) > 0
	if !raced {
		if err := e.createHierarchy(ctx, req.KMS); errors.Is(err, errRaced) {
			raced = true
		} else if err != nil {
			return nil, err
		}
	}
	if err := e.load(ctx); err != nil {
		return nil, err
	}
	if raced {
		return nil, fmt.Errorf("another replica initialized the CA meanwhile (loaded): %w", sdkca.ErrAlreadyInitialized)
	}
	is, err := e.ListIssuers(ctx, &sdkca.ListIssuersRequest{})
	if err != nil {
		return nil, err
	}
	e.mu.RLock()
	root := e.active["root"]
	e.mu.RUnlock()
	sum := sha256.Sum256(root.rec.DER)
	return &sdkca.InitializeResponse{Root: root.rec.DER, RootSHA256: hex.EncodeToString(sum[:]), RootSubject: root.cert.Subject.String(),
		Issuers: is.Issuers}, nil
}

var (
	_ sdkca.Rotator           = (*Engine)(nil)
	_ sdkca.Initializer       = (*Engine)(nil)
	_ sdkca.CertificateLister = (*Engine)(nil)
	_ sdkca.OCSPResponder     = (*Engine)(nil)
)
