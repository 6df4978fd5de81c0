package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// RenewDomain prefixes what an agent signs with its current key to renew.
const RenewDomain = "AVON-RENEW-v1\x00"

// RenewRequest is the body of POST /v1/renew: the agent's current
// certificate, a CSR for its next key, and a proof signed by its current
// key over RenewMessage(csr, time).
type RenewRequest struct {
	Certificate []byte `json:"certificate"`
	CSR         []byte `json:"csr"`
	Time        string `json:"time"` // RFC 3339, within max_skew of calibrated time
	Proof       []byte `json:"proof"`
}

// RenewMessage is what the current key signs: the domain, the SHA-256 of
// the new CSR and the time, so a proof is good for one request only.
func RenewMessage(csr []byte, t string) []byte {
	sum := sha256.Sum256(csr)
	return append(append([]byte(RenewDomain), sum[:]...), t...)
}

func (s *Server) mountRenew(a *api.Server) {
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("ca") {
			ca := inst
			a.Handle("POST /v1/renew", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveRenew(w, r, ca) }))
			return
		}
	}
}

func (s *Server) serveRenew(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEnrollBody+32<<10))
	if err != nil || len(body) > maxEnrollBody+16<<10 {
		enrollProblem(w, http.StatusRequestEntityTooLarge, "Request too large", "")
		return
	}
	var req RenewRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		enrollProblem(w, http.StatusBadRequest, "Malformed request", "want {certificate, csr, time, proof}")
		return
	}
	agentID, err := s.checkRenewal(ctx, ca, &req)
	if err != nil {
		s.auditRenew(ctx, agentID, "failure", err.Error())
		enrollProblem(w, http.StatusUnauthorized, "Renewal refused", err.Error())
		return
	}
	reg := agents.New(s.store)
	if disabled, err := reg.Disabled(ctx, agentID); err != nil || disabled {
		if err == nil {
			err = errors.New("the agent is disabled by an operator")
		}
		s.auditRenew(ctx, agentID, "failure", err.Error())
		enrollProblem(w, http.StatusForbidden, "Renewal refused", err.Error())
		return
	}
	c := ca.CA()
	issued, err := c.Issue(ctx, &sdkca.IssueRequest{CSR: req.CSR, Profile: "agent", CommonName: agentID, URIs: []string{"avon://agent/" + agentID}})
	if err != nil {
		s.auditRenew(ctx, agentID, "failure", err.Error())
		status := http.StatusServiceUnavailable
		if errors.Is(err, sdkca.ErrBadCSR) || errors.Is(err, sdkca.ErrPolicyViolation) {
			status = http.StatusBadRequest
		}
		enrollProblem(w, status, "Not renewed", err.Error())
		return
	}
	if _, err := reg.Enrolled(ctx, agents.Agent{ID: agentID, CertSerial: issued.Serial, CertNotAfter: issued.NotAfter}, s.calibratedNow()); err != nil {
		s.auditRenew(ctx, agentID, "failure", err.Error())
		enrollProblem(w, http.StatusServiceUnavailable, "Renewal not recorded", err.Error())
		return
	}
	if err := s.auditRenew(ctx, agentID, "success", "serial "+issued.Serial); err != nil {
		enrollProblem(w, http.StatusServiceUnavailable, "Renewal not recorded", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(EnrollResponse{AgentID: agentID, Certificate: issued.Certificate, Chain: issued.Chain, NotAfter: issued.NotAfter,
		CRLURL: "/pki/" + ca.Spec().Name + "/crl", OCSPURL: "/pki/" + ca.Spec().Name + "/ocsp", Gateway: s.cfg.Gateway.Listen})
}

// checkRenewal authenticates a renewal: the current certificate chains to
// this CA as an agent, is valid now and not revoked; the proof verifies with
// its key over this CSR and a fresh time, and is used once. It returns the
// agent id (also for the audit record of a refusal).
func (s *Server) checkRenewal(ctx context.Context, ca *pluginhost.Instance, req *RenewRequest) (string, error) {
	cert, err := pqx509.ParseCertificate(req.Certificate)
	if err != nil {
		return "", fmt.Errorf("current certificate: %w", err)
	}
	agentID := ""
	for _, u := range cert.URIs {
		if id, ok := strings.CutPrefix(u.String(), "avon://agent/"); ok {
			agentID = id
		}
	}
	if agentID == "" {
		return "", errors.New("the certificate is not an agent's")
	}
	ts, err := time.Parse(time.RFC3339Nano, req.Time)
	if err != nil {
		return agentID, fmt.Errorf("time %q is not RFC 3339", req.Time)
	}
	if err := s.calib.CheckTimestamp(ts); err != nil {
		return agentID, err
	}
	now, err := s.calib.Now()
	if err != nil {
		return agentID, fmt.Errorf("no trusted time: %w", err)
	}
	c := ca.CA()
	issuers, err := c.ListIssuers(ctx, &sdkca.ListIssuersRequest{})
	if err != nil {
		return agentID, err
	}
	var roots, inters []*pqx509.Certificate
	for _, is := range issuers.Issuers {
		ic, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			continue
		}
		if bytes.Equal(ic.RawSubject, ic.RawIssuer) {
			roots = append(roots, ic)
		} else {
			inters = append(inters, ic)
		}
	}
	if _, err := pqx509.Verify(cert, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return agentID, fmt.Errorf("current certificate: %w", err)
	}
	st, err := c.GetCertificate(ctx, &sdkca.GetCertificateRequest{Serial: fmt.Sprintf("%x", cert.SerialNumber)})
	if err != nil {
		return agentID, fmt.Errorf("current certificate status: %w", err)
	}
	if st.Status != sdkca.StatusGood {
		return agentID, fmt.Errorf("the current certificate is %s", st.Status)
	}
	if err := pqx509.DefaultVerifier.Verify(cert.PublicKey.Algorithm, cert.PublicKey.Raw, RenewMessage(req.CSR, req.Time), req.Proof); err != nil {
		return agentID, fmt.Errorf("proof of the current key: %w", err)
	}
	sum := sha256.Sum256(req.Proof)
	first, err := s.cache.MarkUsed(ctx, "renew", hex.EncodeToString(sum[:]), 2*s.cfg.Calibration.MaxSkew+time.Minute)
	if err != nil {
		return agentID, fmt.Errorf("replay check unavailable: %w", err) // fail closed
	}
	if !first {
		return agentID, errors.New("this renewal proof was already used")
	}
	return agentID, nil
}

func (s *Server) auditRenew(ctx context.Context, agentID, outcome, reason string) error {
	err := s.audit.Emit(ctx, "core", host.Event{Actor: "agent/" + agentID, Action: "agent.renew", Target: "agent/" + agentID,
		Outcome: outcome, Reason: reason})
	if err != nil {
		s.log.Error("audit of a renewal failed", "agent", agentID, "error", err)
	}
	return err
}
