package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// csrNames returns the DNS names a CSR asks for: its SANs and a common
// name, lowercased, sorted, without duplicates.
func csrNames(c *pqx509.CSR) []string {
	set := map[string]bool{}
	for _, n := range c.DNSNames {
		set[strings.ToLower(n)] = true
	}
	if c.Subject.CommonName != "" {
		set[strings.ToLower(c.Subject.CommonName)] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// checkCSR applies RFC 8555 7.4's checks: a signature that verifies,
// exactly the order's names (no other SAN kinds), a key of an accepted
// type that is not the account's key.
func (s *Server) checkCSR(der []byte, o *Order, acctKey *jose.JWK) (*pqx509.CSR, *Problem) {
	c, err := pqx509.ParseCSR(der)
	if err != nil {
		return nil, prob(ProbBadCSR, "CSR does not parse: %v", err)
	}
	if err := c.CheckSignature(pqx509.DefaultVerifier); err != nil {
		return nil, prob(ProbBadCSR, "CSR signature does not verify: %v", err)
	}
	if err := c.Validate(pqx509.DefaultVerifier); err != nil {
		return nil, prob(ProbBadCSR, "CSR: %v", err)
	}
	if !slices.Contains(s.cfg.KeyTypes, c.PublicKey.Algorithm) {
		return nil, prob(ProbBadCSR, "CSR key type %s is not accepted (accepted: %s)", c.PublicKey.Algorithm, strings.Join(s.cfg.KeyTypes, ", "))
	}
	if len(c.IPAddresses)+len(c.URIs)+len(c.EmailAddresses) > 0 {
		return nil, prob(ProbBadCSR, "CSR asks for IP, URI or email names; only the order's DNS names may be requested")
	}
	if k, err := jose.NewJWK(publicKeyOf(c)); err == nil && k.Equal(acctKey) {
		return nil, prob(ProbBadCSR, "CSR key is the account key; use another key for the certificate")
	}
	want := make([]string, 0, len(o.Identifiers))
	for _, id := range o.Identifiers {
		want = append(want, id.Value)
	}
	sort.Strings(want)
	if got := csrNames(c); !slices.Equal(got, want) {
		return nil, prob(ProbBadCSR, "CSR names %v are not the order's identifiers %v", got, want)
	}
	return c, nil
}

// publicKeyOf returns a crypto public key for a classical CSR key (nil
// for others: they cannot be an account key).
func publicKeyOf(c *pqx509.CSR) any { return classical(c.PublicKey) }

// classical converts a classical key to its crypto type through its
// SubjectPublicKeyInfo; nil for a key the standard library does not know
// (ML-DSA).
func classical(k pqx509.PublicKey) any {
	spki, err := pqx509.MarshalSPKI(k)
	if err != nil {
		return nil
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil
	}
	return pub
}

type finalizePayload struct {
	CSR string `json:"csr"`
}

// finalize is RFC 8555 7.4. Of concurrent finalizations of an order
// exactly one certificate is issued and one finalization succeeds (the
// others get orderNotReady): the CA records the order's key with the
// certificate (issueOnce), or, with an older CA, the order goes ready ->
// processing by a conditional put before issuing.
func (s *Server) finalize(ctx context.Context, r *request, id string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	var in finalizePayload
	if p := decodePayload(v.payload, &in); p != nil {
		return nil, p
	}
	o, ver, p := s.loadOrder(ctx, r, v.account, id)
	if p != nil {
		return nil, p
	}
	if o.Status != StatusReady {
		return nil, prob(ProbOrderNotReady, "order is %s, not ready", o.Status)
	}
	der, err := base64.RawURLEncoding.Strict().DecodeString(in.CSR)
	if err != nil || len(der) == 0 {
		return nil, prob(ProbMalformed, "csr is not unpadded base64url DER")
	}
	csr, p := s.checkCSR(der, o, v.key)
	if p != nil {
		return nil, p
	}
	issuer := s.cfg.ClassicalIssuer
	if strings.HasPrefix(csr.PublicKey.Algorithm, "ML-DSA") {
		issuer = s.cfg.PQIssuer
	}
	profile, lifetime := s.cfg.CAProfile, s.cfg.Profiles[o.Profile].Lifetime
	if pr, ok := s.cfg.Profiles[o.Profile]; ok && pr.CAProfile != "" {
		profile = pr.CAProfile
	}
	var names []string
	for _, id := range o.Identifiers {
		names = append(names, id.Value)
	}
	req := ca.IssueRequest{CSR: der, Profile: profile, Issuer: issuer, DNSNames: names, Lifetime: lifetime}
	res, fresh, err := s.issueOnce(ctx, o, req)
	claimed := false
	if errors.Is(err, ca.ErrAlreadyIssued) {
		return nil, prob(ProbOrderNotReady, "order is being finalized by another request")
	}
	if err == nil && res == nil {
		// The CA cannot issue under the order's key: claim the order
		// (ready -> processing by a conditional put) before issuing.
		o.Status = StatusProcessing
		if ver, err = putJSON(ctx, s.deps.Storage, pfxOrder+o.ID, o, true, ver); err != nil {
			if isConflict(err) {
				return nil, prob(ProbOrderNotReady, "order is being finalized by another request")
			}
			return nil, internal("update order", err)
		}
		claimed = true
		res, err = s.deps.CA.Issue(ctx, &req)
	}
	if err != nil {
		var prb *Problem
		if errors.Is(err, ca.ErrBadCSR) || errors.Is(err, ca.ErrPolicyViolation) {
			prb = prob(ProbBadCSR, "the CA refused the CSR: %v", err)
			if !claimed {
				// Nothing is held: another finalization of the order may
				// be issuing right now, and writing the order invalid
				// would orphan its certificate. The order stays ready
				// (as after the plugin's own CSR checks).
				return nil, prb
			}
			o.Status, o.Error = StatusInvalid, prb.stored()
		} else {
			prb = internal("issue", err)
			if !claimed {
				return nil, prb // the order is as it was: the client may try again
			}
			o.Status = StatusReady // the client may try again
		}
		// Without a claim a failed check means another finalization
		// got the order: it is theirs to update.
		if _, perr := putJSON(ctx, s.deps.Storage, pfxOrder+o.ID, o, true, ver); perr != nil && (claimed || !isConflict(perr)) {
			s.deps.Log.Error("order not updated after a failed issuance", "order", o.ID, "status", o.Status, "error", perr)
		}
		return nil, prb
	}
	c := &Cert{Serial: res.Serial, AccountID: v.account.ID, OrderID: o.ID, DER: res.Certificate, Chain: res.Chain,
		NotBefore: res.NotBefore, NotAfter: res.NotAfter}
	key := normSerial(res.Serial)
	// The certificate is stored and the order turns valid naming it, and
	// the finalization is audited, together: with audited batches
	// (apply.go) the two writes and the event are one transaction, one
	// round trip and one commit. With plain batches the two writes are one
	// transaction made while the audit event is recorded. Without, the
	// certificate is stored first, so an order never names a certificate
	// that is not there.
	o.Status, o.CertSerial = StatusValid, key
	// A replayed certificate's record may be stored already (by the attempt
	// whose order write was lost): its serial is the CA's and this order's,
	// so it is written without the create-only check.
	writes := []writeOp{{key: pfxCert + key, v: c, check: fresh}, {key: pfxOrder + o.ID, v: o, check: true, version: ver}}
	ev := host.Event{Action: "acme.order.finalize", Target: "order/" + o.ID, Outcome: "success",
		Actor: "account/" + v.account.ID, Fields: map[string]string{"serial": c.Serial, "names": strings.Join(names, ",")}}
	// The certificate an order replaces is marked once the order is
	// stored, not before: a failed finalization replaces nothing.
	stored := func(o *Order) {
		if o.Replaces != "" {
			s.markReplaced(ctx, o.Replaces)
		}
	}
	var orderErr, auditErr error
	if s.canApplyAudited() {
		_, orderErr = s.applyAuditedJSON(ctx, writes, ev)
		if !errors.Is(orderErr, errNoApply) {
			if orderErr != nil {
				// Another try, when the order is still finalizable, on
				// the order as it now is (finalizeLost).
				retry := func(cur *Order, ver int64) error {
					cur.Status, cur.CertSerial, cur.Error = StatusValid, key, nil
					writes[1].v, writes[1].version = cur, ver
					_, err := s.applyAuditedJSON(ctx, writes, ev)
					return err
				}
				var p *Problem
				if o, p = s.finalizeLost(ctx, r, o.ID, c, fresh, orderErr, retry); p != nil {
					return nil, p
				}
			}
			stored(o)
			return r.finalized(o), nil
		}
		// The core turned out older: write and audit separately.
		orderErr = nil
	}
	batched := s.canApply()
	if !batched {
		if _, err := putJSON(ctx, s.deps.Storage, pfxCert+key, c, fresh, 0); err != nil {
			return nil, finalizeWriteProblem(err)
		}
	}
	_ = all(func() error {
		if batched {
			if _, orderErr = s.applyJSON(ctx, writes); errors.Is(orderErr, errNoApply) {
				// The core turned out older: write one by one.
				if _, orderErr = putJSON(ctx, s.deps.Storage, pfxCert+key, c, fresh, 0); orderErr == nil {
					_, orderErr = putJSON(ctx, s.deps.Storage, pfxOrder+o.ID, o, true, ver)
				}
			}
			return nil
		}
		_, orderErr = putJSON(ctx, s.deps.Storage, pfxOrder+o.ID, o, true, ver)
		return nil
	}, func() error {
		auditErr = s.deps.Audit(ctx, ev)
		return nil
	})
	if orderErr != nil {
		// Without audited batches the success event was recorded beside
		// the write: no retry on these older paths (finalizeLost's
		// failure event follows it when the certificate is revoked).
		_, p := s.finalizeLost(ctx, r, o.ID, c, fresh, orderErr, nil)
		return nil, p
	}
	stored(o)
	if auditErr != nil {
		return nil, internal("audit", auditErr)
	}
	return r.finalized(o), nil
}

// finalizeLost handles a finalization whose final write failed, and
// returns the order stored by a retry that succeeded, or the problem to
// answer. Only a failed check (the order changed since it was read) needs
// more than an error; the order is read again and:
//   - names this certificate: a concurrent finalization with the same CSR
//     stored it (the CA replayed the certificate to it); orderNotReady,
//     like any finalization of a finalized order;
//   - is still finalizable (stored, it says pending — ready is computed
//     from its authorizations — or ready after an undone claim): written
//     again, on the order as read, under its new version, when retry is
//     given (at most three more writes); otherwise, or when they all
//     conflict, orderNotReady with the certificate left recorded at the CA,
//     where the same CSR gets it back;
//   - is processing (a replica that still claims orders holds it; its
//     claim may be undone and the order finalized with this very
//     certificate by a replay): orderNotReady, nothing revoked;
//   - cannot be read: an internal error, nothing revoked;
//   - is gone, invalid or valid with another certificate (final states):
//     a certificate the CA signed and recorded for this request (fresh) is
//     held by nobody and never will be. It is revoked (superseded) and the
//     failure audited. A replayed certificate is left alone: it belongs to
//     the request that recorded it first.
func (s *Server) finalizeLost(ctx context.Context, r *request, orderID string, c *Cert, fresh bool, err error, retry func(cur *Order, ver int64) error) (*Order, *Problem) {
	if !isConflict(err) {
		return nil, internal("update order", err)
	}
	for tries := 0; ; tries++ {
		var now Order
		ver, gerr := s.getJSON(ctx, r, pfxOrder+orderID, &now)
		switch {
		case gerr != nil && !isNotFound(gerr):
			s.deps.Log.Error("order not read again after its finalization conflicted; its certificate stays recorded at the CA",
				"order", orderID, "serial", c.Serial, "error", gerr)
			return nil, internal("read order", gerr)
		case gerr == nil && now.Status == StatusValid && now.CertSerial == normSerial(c.Serial):
			return nil, prob(ProbOrderNotReady, "order was finalized by another request")
		case gerr == nil && finalizable(now.Status) && retry != nil && tries < 3:
			err := retry(&now, ver)
			if err == nil {
				return &now, nil
			}
			if !isConflict(err) {
				return nil, internal("update order", err)
			}
			continue
		case gerr == nil && (finalizable(now.Status) || now.Status == StatusProcessing):
			return nil, prob(ProbOrderNotReady, "order changed while it was finalized; finalize it again")
		}
		if fresh {
			s.revokeUnheld(ctx, orderID, c)
		}
		return nil, prob(ProbOrderNotReady, "order was finalized or changed by another request")
	}
}

// finalizable reports whether a stored order status still allows the
// finalization that found the order ready: a stored order says pending
// until it is finalized (ready is computed from its authorizations when
// it is read, which the finalization did), or ready after an undone
// claim.
func finalizable(status string) bool { return status == StatusPending || status == StatusReady }

// revokeUnheld revokes a certificate recorded for an order that went
// elsewhere for good (finalizeLost) and audits the failed finalization.
// The CA dates the revocation at its own trusted time (after the
// certificate was signed).
func (s *Server) revokeUnheld(ctx context.Context, orderID string, c *Cert) {
	detail := "order changed while its certificate was issued; certificate revoked (superseded)"
	if _, err := s.deps.CA.Revoke(ctx, &ca.RevokeRequest{Serial: c.Serial, Reason: reasonSuperseded}); errors.Is(err, ca.ErrAlreadyRevoked) {
		detail = "order changed while its certificate was issued; the CA has it revoked already (or changed meanwhile): " + err.Error()
		s.deps.Log.Warn("certificate issued for an order that changed meanwhile: already revoked", "order", orderID, "serial", c.Serial, "error", err)
	} else if err != nil {
		detail = "order changed while its certificate was issued; revoking the certificate failed: " + err.Error()
		s.deps.Log.Error("certificate issued for an order that changed meanwhile is not revoked", "order", orderID, "serial", c.Serial, "error", err)
	}
	if err := s.deps.Audit(ctx, host.Event{Action: "acme.order.finalize", Target: "order/" + orderID, Outcome: "failure",
		Actor: "account/" + c.AccountID, Fields: map[string]string{"serial": c.Serial, "detail": detail}}); err != nil {
		s.deps.Log.Error("finalization failure not audited", "order", orderID, "serial", c.Serial, "error", err)
	}
}

// reasonSuperseded is RFC 5280's CRLReason superseded.
const reasonSuperseded = 4

// issueOnce issues req under the order's key when the CA can
// (ca.OnceIssuer): of concurrent finalizations of the order the CA records
// one certificate, in its own issuance transaction, and a finalization
// whose answer was lost (or whose server stopped before storing it) gets
// the same certificate again for the same CSR. Nothing is claimed in the
// order first. It returns a nil response and a nil error when the CA
// cannot (an older CA, or a core that cannot record the key): the caller
// claims the order and issues as before. ca.ErrAlreadyIssued means another
// finalization of the order, with another CSR, was issued.
func (s *Server) issueOnce(ctx context.Context, o *Order, req ca.IssueRequest) (res *ca.IssueResponse, fresh bool, err error) {
	oi, ok := s.deps.CA.(ca.OnceIssuer)
	if !ok || s.noOnce.Load() {
		return nil, false, nil
	}
	ores, err := oi.IssueOnce(ctx, &ca.IssueOnceRequest{Key: onceKey(o.ID), Request: req})
	if errors.Is(err, errdef.ErrNotImplemented) {
		s.noOnce.Store(true)
		s.deps.Log.Warn("the CA cannot issue under an order's key (ca protocol minor 6); finalizations claim the order first", "error", err)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &ores.Issued, !ores.Replayed, nil
}

// onceKey is the key an order's certificate is issued under.
func onceKey(orderID string) string { return "acme-order/" + orderID }

// finalizeWriteProblem is the answer to a failed write of a finalized
// order: a failed check means another finalization of the order stored
// it first.
func finalizeWriteProblem(err error) *Problem {
	if isConflict(err) {
		return prob(ProbOrderNotReady, "order was finalized by another request")
	}
	return internal("update order", err)
}

// finalized is the answer to a finalization that succeeded: the order.
func (r *request) finalized(o *Order) *response {
	resp := jsonResponse(http.StatusOK, r.orderJSON(o))
	resp.header.Set("Location", r.url("/order/"+o.ID))
	return resp
}

// pemChain is the certificate and its chain, PEM (RFC 8555 9.1).
func pemChain(c *Cert) []byte {
	var b bytes.Buffer
	for _, der := range append([][]byte{c.DER}, c.Chain...) {
		b.WriteString("-----BEGIN CERTIFICATE-----\n")
		enc := base64.StdEncoding.EncodeToString(der)
		for len(enc) > 64 {
			b.WriteString(enc[:64] + "\n")
			enc = enc[64:]
		}
		b.WriteString(enc + "\n-----END CERTIFICATE-----\n")
	}
	return b.Bytes()
}

// loadCert reads a stored certificate by serial.
func (s *Server) loadCert(ctx context.Context, r *request, serial string) (*Cert, int64, *Problem) {
	if !validID(serial) {
		return nil, 0, prob(ProbMalformed, "no certificate %q", serial).withStatus(http.StatusNotFound)
	}
	var c Cert
	ver, err := s.getJSON(ctx, r, pfxCert+serial, &c)
	if isNotFound(err) {
		return nil, 0, prob(ProbMalformed, "no certificate %q", serial).withStatus(http.StatusNotFound)
	}
	if err != nil {
		return nil, 0, internal("load certificate", err)
	}
	return &c, ver, nil
}

// certificate is POST-as-GET on a certificate: the PEM chain, the default
// one or (alt = "N") alternate chain N, with Link headers to the others
// (chains.go).
func (s *Server) certificate(ctx context.Context, r *request, serial, alt string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	if !v.postAsGet() {
		return nil, prob(ProbMalformed, "POST-as-GET must have an empty payload")
	}
	c, _, p := s.loadCert(ctx, r, serial)
	if p != nil {
		return nil, p
	}
	if c.AccountID != v.account.ID {
		return nil, prob(ProbUnauthorized, "the certificate belongs to another account")
	}
	alts, err := s.alternates(ctx, r.now, c)
	if err != nil {
		if alt != "" {
			return nil, internal("alternate chains", err)
		}
		// The default chain is stored here: serve it without links.
		s.deps.Log.Warn("certificate served without its alternate chains", "serial", serial, "error", err)
	}
	served := 0
	if alt != "" {
		i, ok := chainIndex(alt, len(alts))
		if !ok {
			return nil, prob(ProbMalformed, "certificate %s has no chain %q", serial, alt).withStatus(http.StatusNotFound)
		}
		served = i
		chosen := *c
		chosen.Chain = alts[i-1]
		c = &chosen
	}
	h := http.Header{}
	h.Set("Content-Type", "application/pem-certificate-chain")
	chainLinks(h, r.url("/cert/"+serial), len(alts), served)
	return &response{status: http.StatusOK, header: h, body: pemChain(c)}, nil
}

type revokePayload struct {
	Certificate string `json:"certificate"`
	Reason      *int   `json:"reason"`
}

// revocable are the reasons a subscriber may give (RFC 5280 5.3.1):
// unspecified, keyCompromise, affiliationChanged, superseded,
// cessationOfOperation.
var revocable = map[int]bool{0: true, 1: true, 3: true, 4: true, 5: true}

// revokeCert is RFC 8555 7.6: by the account that ordered the
// certificate, or by the certificate's own key.
func (s *Server) revokeCert(ctx context.Context, r *request) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byEither)
	if p != nil {
		return nil, p
	}
	var in revokePayload
	if p := decodePayload(v.payload, &in); p != nil {
		return nil, p
	}
	der, err := base64.RawURLEncoding.Strict().DecodeString(in.Certificate)
	if err != nil || len(der) == 0 {
		return nil, prob(ProbMalformed, "certificate is not unpadded base64url DER")
	}
	reason := 0
	if in.Reason != nil {
		reason = *in.Reason
	}
	if !revocable[reason] {
		return nil, prob(ProbBadRevocationReason, "reason %d: a subscriber may give 0, 1, 3, 4 or 5", reason)
	}
	cert, err := pqx509.ParseCertificate(der)
	if err != nil {
		return nil, prob(ProbMalformed, "certificate does not parse: %v", err)
	}
	serial := fmt.Sprintf("%x", cert.SerialNumber)
	c, ver, p := s.loadCert(ctx, r, serial)
	if p != nil {
		return nil, prob(ProbMalformed, "this server did not issue that certificate").withStatus(http.StatusNotFound)
	}
	if !bytes.Equal(c.DER, der) {
		return nil, prob(ProbMalformed, "this server did not issue that certificate").withStatus(http.StatusNotFound)
	}
	actor := ""
	if v.account != nil {
		if c.AccountID != v.account.ID {
			return nil, prob(ProbUnauthorized, "the certificate was ordered by another account")
		}
		actor = "account/" + v.account.ID
	} else {
		k, err := jose.NewJWK(publicKeyOfCert(cert))
		if err != nil || !k.Equal(v.key) {
			return nil, prob(ProbUnauthorized, "the request is signed neither by an account nor by the certificate's key")
		}
		actor = "certificate-key"
	}
	if c.Revoked {
		return nil, prob(ProbAlreadyRevoked, "certificate %s is already revoked", serial)
	}
	if _, err := s.deps.CA.Revoke(ctx, &ca.RevokeRequest{Serial: c.Serial, Reason: reason, Time: r.now}); err != nil {
		if errors.Is(err, ca.ErrAlreadyRevoked) {
			p = prob(ProbAlreadyRevoked, "certificate %s is already revoked", serial)
		} else {
			return nil, internal("revoke", err)
		}
	}
	c.Revoked = true
	if _, err := putJSON(ctx, s.deps.Storage, pfxCert+serial, c, true, ver); err != nil && !isConflict(err) {
		s.deps.Log.Warn("revocation not recorded in the acme store (the CA has it)", "serial", serial, "error", err)
	}
	if p != nil {
		return nil, p
	}
	if err := s.deps.Audit(ctx, host.Event{Action: "acme.cert.revoke", Target: "cert/" + serial, Outcome: "success", Actor: actor,
		Fields: map[string]string{"reason": fmt.Sprint(reason)}}); err != nil {
		return nil, internal("audit", err)
	}
	return &response{status: http.StatusOK, header: http.Header{}}, nil
}

func publicKeyOfCert(c *pqx509.Certificate) any { return classical(c.PublicKey) }

// normSerial is a serial in lowercase hex without leading zeros, as
// big.Int formats it: the key certificates are stored and found under,
// whatever the CA's own spelling (it pads to a fixed length).
func normSerial(s string) string {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		return s
	}
	return n.Text(16)
}
