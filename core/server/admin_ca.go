package server

import (
	"context"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
)

// The CA routes: issuers, rotation and init, certificates, the CRL.

// IssuerInfo is one line of `avon ca info`.
type IssuerInfo struct {
	Name        string    `json:"name"`
	Algorithm   string    `json:"algorithm"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	NotAfter    time.Time `json:"not_after"`
	Default     bool      `json:"default"`
	Family      string    `json:"family,omitempty"`
	Generation  int       `json:"generation,omitempty"`
	Active      bool      `json:"active"`
	KMS         string    `json:"kms,omitempty"` // "" = the default kms plugin
	Certificate []byte    `json:"certificate"`
}

// CertInfo is `avon cert show`.
type CertInfo struct {
	Serial    string    `json:"serial"`
	Status    string    `json:"status"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Names     []string  `json:"names"`
	Algorithm string    `json:"algorithm"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    int       `json:"reason,omitempty"`
	DER       []byte    `json:"der"`
}

// Reasons are the RFC 5280 CRLReason names `avon cert revoke` accepts.
var Reasons = map[string]int{"unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
	"superseded": 4, "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10}

// RevokeRequest is the body of POST /v1/certs/{serial}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason"` // an RFC 5280 reason name (Reasons) or its number
}

// RevokeResult is what POST /v1/certs/{serial}/revoke answers.
type RevokeResult struct {
	Serial  string `json:"serial"`
	Revoked bool   `json:"revoked"`
	Reason  int    `json:"reason"`
	By      string `json:"by"`
}

// CertList is a page of `avon cert list` (GET /v1/certs).
type CertList struct {
	Certificates  []CertListEntry `json:"certificates"`
	NextPageToken string          `json:"next_page_token,omitempty"`
}

// CertListEntry is one certificate of a listing.
type CertListEntry struct {
	Serial    string    `json:"serial"`
	Subject   string    `json:"subject"`
	SANs      []string  `json:"sans,omitempty"`
	Profile   string    `json:"profile"`
	Issuer    string    `json:"issuer"`
	Status    string    `json:"status"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    int       `json:"reason,omitempty"`
}

// RotateRequest is the body of POST /v1/ca/rotate.
type RotateRequest struct {
	Issuer    string `json:"issuer"`    // "" = issuing
	KMS       string `json:"kms"`       // "" = the default kms plugin
	Algorithm string `json:"algorithm"` // "" = the issuer's
}

// RotateResult is what POST /v1/ca/rotate answers.
type RotateResult struct {
	Issuer     string    `json:"issuer"`
	Generation int       `json:"generation"`
	Serial     string    `json:"serial"`
	KMS        string    `json:"kms"`
	Algorithm  string    `json:"algorithm"`
	Subject    string    `json:"subject"`
	NotAfter   time.Time `json:"not_after"`
	By         string    `json:"by"`
}

// InitRequest is the body of POST /v1/ca/init.
type InitRequest struct {
	KMS string `json:"kms"` // "" = the CA's default kms plugin
}

// InitResult is what POST /v1/ca/init answers.
type InitResult struct {
	RootSHA256  string       `json:"root_sha256"`
	RootSubject string       `json:"root_subject"`
	Root        []byte       `json:"root"` // DER
	Issuers     []IssuerInfo `json:"issuers"`
	By          string       `json:"by"`
	// GatewayCertificate is "issued", or why not (the next start retries).
	GatewayCertificate string `json:"gateway_certificate"`
}

func nameString(n pkix.Name) string { return n.String() }

func (s *Server) caRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/ca/issuers", Scope: adminapi.ScopeRead, OperationID: "listIssuers",
			Summary: "The CA's issuers: every generation, algorithm, KMS, subject and expiry", Response: []IssuerInfo{}, Handler: s.adminIssuers},
		{Method: "POST", Pattern: "/v1/ca/rotate", Scope: adminapi.ScopeWrite, OperationID: "rotateIssuer",
			Summary: "A new generation of an issuing CA, its key in a KMS plugin", Request: RotateRequest{}, Response: RotateResult{},
			Audit: "ca.rotate.request", Target: "issuer", Handler: s.adminRotate},
		{Method: "POST", Pattern: "/v1/ca/init", Scope: adminapi.ScopeWrite, OperationID: "initCA",
			Summary: "Create the hierarchy of a CA configured with init = \"manual\"", Request: InitRequest{}, Response: InitResult{},
			Audit: "ca.init.request", Target: "ca", Handler: s.adminInit},
		{Method: "GET", Pattern: "/v1/certs", Scope: adminapi.ScopeRead, OperationID: "listCertificates", Paged: true,
			Summary: "Certificates by serial", Response: CertList{}, Query: []adminapi.Param{
				{Name: "status", Description: "good or revoked"}, {Name: "profile", Description: "agent, gateway, server, client"},
				{Name: "issuer", Description: "an issuer (all its generations) or one generation, e.g. issuing.1"}},
			Handler: s.adminListCerts},
		{Method: "GET", Pattern: "/v1/certs/{serial}", Scope: adminapi.ScopeRead, OperationID: "getCertificate",
			Summary: "One certificate and its status", Response: CertInfo{}, Handler: s.adminCert},
		{Method: "POST", Pattern: "/v1/certs/{serial}/revoke", Scope: adminapi.ScopeWrite, OperationID: "revokeCertificate",
			Summary: "Revoke a certificate: every session authenticated with it ends", Request: RevokeRequest{}, Response: RevokeResult{},
			Audit: "cert.revoke.request", Target: "cert/{serial}", Handler: s.adminRevoke},
		{Method: "GET", Pattern: "/v1/crl", Scope: adminapi.ScopeRead, OperationID: "getCRL", Summary: "The current CRL (DER)",
			Query:    []adminapi.Param{{Name: "issuer", Description: "issuer name (default: the default issuer)"}},
			Response: []byte{}, ContentType: "application/pkix-crl", Handler: s.adminCRL},
	}
}

func (s *Server) adminIssuers(w http.ResponseWriter, r *adminapi.Request) error {
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := ca.CA().ListIssuers(ctx, &sdkca.ListIssuersRequest{})
	if err != nil {
		return err
	}
	out := []IssuerInfo{}
	for _, is := range resp.Issuers {
		c, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			return fmt.Errorf("issuer %s: %w", is.Name, err)
		}
		out = append(out, IssuerInfo{Name: is.Name, Algorithm: is.Algorithm, Subject: nameString(c.Subject), Issuer: nameString(c.Issuer),
			NotAfter: c.NotAfter, Default: is.Default, Family: is.Family, Generation: is.Generation, Active: is.Active || is.Generation == 0,
			KMS: is.KMS, Certificate: is.Certificate})
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminCert(w http.ResponseWriter, r *adminapi.Request) error {
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := ca.CA().GetCertificate(ctx, &sdkca.GetCertificateRequest{Serial: r.PathValue("serial")})
	if err != nil {
		return err
	}
	c, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil {
		return err
	}
	info := CertInfo{Serial: fmt.Sprintf("%032x", c.SerialNumber), Status: string(resp.Status), Subject: nameString(c.Subject),
		Issuer: nameString(c.Issuer), Algorithm: c.PublicKey.Algorithm, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		RevokedAt: resp.RevokedAt, Reason: resp.RevocationReason, DER: resp.Certificate, Names: []string{}}
	for _, d := range c.DNSNames {
		info.Names = append(info.Names, "dns:"+d)
	}
	for _, ip := range c.IPAddresses {
		info.Names = append(info.Names, "ip:"+ip.String())
	}
	for _, u := range c.URIs {
		info.Names = append(info.Names, "uri:"+u.String())
	}
	adminapi.JSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) adminRevoke(w http.ResponseWriter, r *adminapi.Request) error {
	var body RevokeRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	code, ok := Reasons[body.Reason]
	if !ok {
		if n, err := strconv.Atoi(body.Reason); err == nil && n >= 0 && n <= 10 && n != 7 {
			code, ok = n, true
		}
	}
	if !ok {
		return adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("reason %.40q is not an RFC 5280 CRLReason", body.Reason))
	}
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	serial := r.PathValue("serial")
	r.AuditField("reason", body.Reason)
	// The CA plugin's own audit record of the revocation becomes the
	// cert.revoked event every replica's gateway acts on (pluginAudit).
	if _, err := ca.CA().Revoke(ctx, &sdkca.RevokeRequest{Serial: serial, Reason: code}); err != nil {
		return err
	}
	adminapi.JSON(w, http.StatusOK, RevokeResult{Serial: serial, Revoked: true, Reason: code, By: r.Principal.Actor})
	return nil
}

func (s *Server) adminListCerts(w http.ResponseWriter, r *adminapi.Request) error {
	q := r.URL.Query()
	listing := "certs?status=" + q.Get("status") + "&profile=" + q.Get("profile") + "&issuer=" + q.Get("issuer")
	pg, err := r.Page(listing)
	if err != nil {
		return err
	}
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	lister, ok := ca.CA().(sdkca.CertificateLister)
	if !ok {
		return adminapi.NewProblem(adminapi.TypeNotImplemented, "the CA plugin cannot list certificates")
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := lister.ListCertificates(ctx, &sdkca.ListCertificatesRequest{After: pg.After, Limit: min(pg.Size, sdkca.MaxListLimit),
		Status: sdkca.Status(q.Get("status")), Profile: q.Get("profile"), Issuer: q.Get("issuer")})
	if err != nil {
		return err
	}
	out := CertList{Certificates: []CertListEntry{}}
	if resp.Next != "" {
		out.NextPageToken = adminapi.EncodePageToken(listing, resp.Next)
	}
	for _, c := range resp.Certificates {
		out.Certificates = append(out.Certificates, CertListEntry{Serial: c.Serial, Subject: c.Subject, SANs: c.SANs, Profile: c.Profile,
			Issuer: c.Issuer, Status: string(c.Status), NotBefore: c.NotBefore, NotAfter: c.NotAfter, RevokedAt: c.RevokedAt, Reason: c.Reason})
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminRotate(w http.ResponseWriter, r *adminapi.Request) error {
	var body RotateRequest
	if _, err := r.DecodeOptional(&body); err != nil {
		return err
	}
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	rot, ok := ca.CA().(sdkca.Rotator)
	if !ok {
		return adminapi.NewProblem(adminapi.TypeNotImplemented, "the CA plugin cannot rotate issuers")
	}
	r.AuditField("issuer", body.Issuer)
	r.AuditField("kms", body.KMS)
	r.AuditField("algorithm", body.Algorithm)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	resp, err := rot.RotateIssuer(ctx, &sdkca.RotateRequest{Issuer: body.Issuer, KMS: body.KMS, Algorithm: body.Algorithm})
	if err != nil {
		return err
	}
	out := RotateResult{Issuer: resp.Issuer, Generation: resp.Generation, Serial: resp.Serial, KMS: resp.KMS, Algorithm: resp.Algorithm,
		NotAfter: resp.NotAfter, By: r.Principal.Actor}
	if c, err := pqx509.ParseCertificate(resp.Certificate); err == nil {
		out.Subject = nameString(c.Subject)
	}
	s.log.Info("issuer rotated", "issuer", resp.Issuer, "generation", resp.Generation, "kms", resp.KMS, "by", r.Principal.Actor)
	// Every replica's gateway re-reads the issuers (this one's too); one
	// that misses the event re-reads them on its subscription gap.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer pcancel()
	if _, err := s.events.Publish(pctx, events.CARotated, ca.Spec().Name,
		map[string]string{"issuer": resp.Issuer, "generation": strconv.Itoa(resp.Generation), "serial": resp.Serial}); err != nil {
		s.log.Warn("ca.rotated not published: gateways trust the new generation after their next event gap or restart", "error", err)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminInit(w http.ResponseWriter, r *adminapi.Request) error {
	var body InitRequest
	if _, err := r.DecodeOptional(&body); err != nil {
		return err
	}
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	ini, ok := ca.CA().(sdkca.Initializer)
	if !ok {
		return adminapi.NewProblem(adminapi.TypeNotImplemented, "the CA plugin has no manual initialization")
	}
	r.AuditField("kms", body.KMS)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	resp, err := ini.Initialize(ctx, &sdkca.InitializeRequest{KMS: body.KMS})
	if err != nil {
		return err
	}
	out := InitResult{RootSHA256: resp.RootSHA256, RootSubject: resp.RootSubject, Root: resp.Root, By: r.Principal.Actor, GatewayCertificate: "issued"}
	for _, is := range resp.Issuers {
		out.Issuers = append(out.Issuers, IssuerInfo{Name: is.Name, Algorithm: is.Algorithm, Family: is.Family, Generation: is.Generation,
			Active: is.Active, KMS: is.KMS, Default: is.Default, Certificate: is.Certificate})
	}
	// The gateway certificate that waited for the hierarchy.
	if err := s.ensureGatewayCertificate(ctx); err != nil {
		s.log.Warn("gateway certificate not issued after ca init; the next start retries", "error", err)
		out.GatewayCertificate = err.Error()
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminCRL(w http.ResponseWriter, r *adminapi.Request) error {
	ca, err := s.pluginOf("ca", "CA")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := ca.CA().CRL(ctx, &sdkca.CRLRequest{Issuer: r.URL.Query().Get("issuer")})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Last-Modified", resp.ThisUpdate.UTC().Format(http.TimeFormat))
	_, _ = w.Write(resp.CRL)
	return nil
}
