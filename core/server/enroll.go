package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// EnrollRequest is the body of POST /v1/enroll.
type EnrollRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"` // PKCS#10 DER (base64 in JSON), signed by the agent's new key
}

// EnrollResponse is what an enrolled agent keeps: its identity, its
// certificate and chain, the trust anchors and where to check revocation.
type EnrollResponse struct {
	AgentID     string    `json:"agent_id"`
	Group       string    `json:"group"`
	Certificate []byte    `json:"certificate"` // DER
	Chain       [][]byte  `json:"chain"`       // DER, issuer first, excluding the root
	Roots       [][]byte  `json:"roots"`       // DER trust anchors
	NotAfter    time.Time `json:"not_after"`
	CRLURL      string    `json:"crl_url"`  // path on this API
	OCSPURL     string    `json:"ocsp_url"` // path on this API
	// Gateway is the UDP endpoint agents connect to (gateway { endpoint });
	// empty when the gateway listens on a wildcard address without an
	// endpoint set (the agent then needs up -gateway).
	Gateway string `json:"gateway"`
	// GatewayCertificate is the gateway's certified ML-DSA identity (DER),
	// which the agent checks in the tunnel handshake.
	GatewayCertificate []byte `json:"gateway_certificate,omitempty"`
}

// maxEnrollBody bounds the request (an ML-DSA-87 CSR is under 8 KiB).
const maxEnrollBody = 64 << 10

// mountEnroll serves POST /v1/enroll when a CA plugin is configured: the
// agent proves it holds a one-time token and its key (the CSR signature),
// and gets an agent certificate from the first CA plugin.
func (s *Server) mountEnroll(a *api.Server) {
	var ca *pluginhost.Instance
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("ca") {
			ca = inst
			break
		}
	}
	if ca == nil {
		return
	}
	tokens := enroll.NewTokens(s.store, s.opts.Rand, s.calib.Now)
	a.Handle("POST /v1/enroll", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveEnroll(w, r, ca, tokens)
	}))
}

func enrollProblem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "urn:avon:problem:enroll", "title": title, "status": status, "detail": detail})
}

func (s *Server) serveEnroll(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance, tokens *enroll.Tokens) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEnrollBody+1))
	if err != nil || len(body) > maxEnrollBody {
		enrollProblem(w, http.StatusRequestEntityTooLarge, "Request too large", fmt.Sprintf("at most %d bytes", maxEnrollBody))
		return
	}
	var req EnrollRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		enrollProblem(w, http.StatusBadRequest, "Malformed request", "want {\"token\": \"avon-enroll-v1....\", \"csr\": \"<base64 DER>\"}")
		return
	}
	// Check the CSR before spending the token, so a bad request does not
	// burn it.
	csr, err := pqx509.ParseCSR(req.CSR)
	if err == nil {
		err = csr.Validate(pqx509.DefaultVerifier)
	}
	if err != nil {
		enrollProblem(w, http.StatusBadRequest, "Bad CSR", err.Error())
		return
	}
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	agentID := hex.EncodeToString(sum[:12])
	tok, err := tokens.Spend(ctx, req.Token, "agent/"+agentID)
	if err != nil {
		status, title := http.StatusUnauthorized, "Token refused"
		switch {
		case errors.Is(err, enroll.ErrMalformed):
			status, title = http.StatusBadRequest, "Malformed token"
		case errors.Is(err, enroll.ErrUsed):
			status, title = http.StatusConflict, "Token already used"
		case errors.Is(err, enroll.ErrExpired):
			status, title = http.StatusGone, "Token expired"
		case errors.Is(err, enroll.ErrUnknown):
		default:
			status, title = http.StatusServiceUnavailable, "Enrollment unavailable"
		}
		s.auditEnroll(ctx, agentID, "", "failure", err.Error())
		enrollProblem(w, status, title, err.Error())
		return
	}
	c := ca.CA()
	issued, err := c.Issue(ctx, &sdkca.IssueRequest{CSR: req.CSR, Profile: "agent", CommonName: agentID,
		URIs: []string{"avon://agent/" + agentID}})
	if err != nil {
		s.auditEnroll(ctx, agentID, tok.Group, "failure", err.Error())
		status := http.StatusServiceUnavailable
		if errors.Is(err, sdkca.ErrBadCSR) || errors.Is(err, sdkca.ErrPolicyViolation) {
			status = http.StatusBadRequest
		}
		enrollProblem(w, status, "Not issued (the token is spent; ask for a new one)", err.Error())
		return
	}
	issuers, err := c.ListIssuers(ctx, &sdkca.ListIssuersRequest{})
	if err != nil {
		enrollProblem(w, http.StatusServiceUnavailable, "Enrollment unavailable", err.Error())
		return
	}
	resp := EnrollResponse{AgentID: agentID, Group: tok.Group, Certificate: issued.Certificate, Chain: issued.Chain,
		NotAfter: issued.NotAfter, CRLURL: "/pki/" + ca.Spec().Name + "/crl", OCSPURL: "/pki/" + ca.Spec().Name + "/ocsp",
		Gateway: s.cfg.Gateway.Endpoint}
	if gc, err := s.GatewayCertificate(ctx); err == nil {
		resp.GatewayCertificate = gc.Certificate
	}
	for _, is := range issuers.Issuers {
		if cert, err := pqx509.ParseCertificate(is.Certificate); err == nil && bytes.Equal(cert.RawSubject, cert.RawIssuer) {
			resp.Roots = append(resp.Roots, is.Certificate)
		}
	}
	// The agent's record: what the Admin API lists, and where an operator
	// disables it. Without it the agent could not be managed: refuse.
	if _, err := agents.New(s.store).Enrolled(ctx, agents.Agent{ID: agentID, Group: tok.Group, CertSerial: issued.Serial,
		CertNotAfter: issued.NotAfter}, s.calibratedNow()); err != nil {
		s.auditEnroll(ctx, agentID, tok.Group, "failure", err.Error())
		enrollProblem(w, http.StatusServiceUnavailable, "Enrollment not recorded", err.Error())
		return
	}
	if err := s.auditEnroll(ctx, agentID, tok.Group, "success", "serial "+issued.Serial); err != nil {
		enrollProblem(w, http.StatusServiceUnavailable, "Enrollment not recorded", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Server) auditEnroll(ctx context.Context, agentID, group, outcome, reason string) error {
	err := s.audit.Emit(ctx, "core", host.Event{Actor: "agent/" + agentID, Action: "agent.enroll", Target: "agent/" + agentID,
		Outcome: outcome, Reason: reason, Fields: map[string]string{"group": group}})
	if err != nil {
		s.log.Error("audit of an enrollment failed", "agent", agentID, "error", err)
	}
	return err
}
