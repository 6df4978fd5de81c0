package server

import (
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// AdminSocket is the local administration socket under data_dir. Until
// operator authentication lands on the HTTPS API, administration that
// changes state (revocation) is served only here: the socket is 0600 in the
// 0700 data dir, so only the core's own user (or root) reaches it, and every
// change is audited with the caller's uid from the kernel (SO_PEERCRED).
const AdminSocket = "admin.sock"

type peerKey struct{}

// startAdmin serves the admin routes on data_dir/admin.sock.
func (s *Server) startAdmin() error {
	path := filepath.Join(s.cfg.DataDir, AdminSocket)
	if len(path) >= 104 { // sun_path: 108 bytes on Linux, 104 elsewhere
		s.log.Warn("admin socket disabled: its path is too long for a unix socket; use a shorter data_dir", "path", path)
		return nil
	}
	_ = os.Remove(path) // a socket left by a killed core
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	var ca *pluginhost.Instance
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("ca") && ca == nil {
			ca = inst
		}
	}
	if ca != nil {
		mux.HandleFunc("GET /v1/ca/issuers", func(w http.ResponseWriter, r *http.Request) { s.adminIssuers(w, r, ca) })
		mux.HandleFunc("GET /v1/certs", func(w http.ResponseWriter, r *http.Request) { s.adminListCerts(w, r, ca) })
		mux.HandleFunc("POST /v1/ca/rotate", func(w http.ResponseWriter, r *http.Request) { s.adminRotate(w, r, ca) })
		mux.HandleFunc("POST /v1/ca/init", func(w http.ResponseWriter, r *http.Request) { s.adminInit(w, r, ca) })
		mux.HandleFunc("GET /v1/certs/{serial}", func(w http.ResponseWriter, r *http.Request) { s.adminCert(w, r, ca) })
		mux.HandleFunc("POST /v1/certs/{serial}/revoke", func(w http.ResponseWriter, r *http.Request) { s.adminRevoke(w, r, ca) })
		mux.HandleFunc("GET /v1/crl", func(w http.ResponseWriter, r *http.Request) {
			s.serveCRL(w, r, ca, r.URL.Query().Get("issuer"))
		})
	}
	if inst, err := s.acmeInstance(); err == nil && inst != nil {
		mux.HandleFunc("POST /v1/acme/eab", func(w http.ResponseWriter, r *http.Request) {
			actor, _ := r.Context().Value(peerKey{}).(string)
			r.Header = http.Header{"Content-Type": {"application/json"}, "X-Avon-Admin-Actor": {actor}}
			s.forwardACME(w, r, inst, "/admin/eab", "")
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uc, ok := c.(*net.UnixConn); ok {
				if raw, err := uc.SyscallConn(); err == nil {
					var cred *unix.Ucred
					_ = raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
					if cred != nil {
						return context.WithValue(ctx, peerKey{}, fmt.Sprintf("local-admin:uid=%d,pid=%d", cred.Uid, cred.Pid))
					}
				}
			}
			return ctx
		}}
	s.admin = srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func actorOf(r *http.Request) string {
	if a, ok := r.Context().Value(peerKey{}).(string); ok {
		return a
	}
	return "local-admin"
}

func adminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func adminError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, sdkca.ErrCertificateNotFound), errors.Is(err, sdkca.ErrUnknownIssuer):
		code = http.StatusNotFound
	case errors.Is(err, sdkca.ErrAlreadyRevoked), errors.Is(err, sdkca.ErrAlreadyInitialized):
		code = http.StatusConflict
	case errors.Is(err, sdkca.ErrPolicyViolation), errors.Is(err, sdkca.ErrUnknownKMS), errors.Is(err, errdef.ErrInvalidArgument):
		code = http.StatusBadRequest
	case errors.Is(err, sdkca.ErrNotInitialized):
		code = http.StatusServiceUnavailable
	case errors.Is(err, errdef.ErrNotImplemented):
		code = http.StatusNotImplemented
	}
	adminJSON(w, code, map[string]any{"status": code, "detail": err.Error()})
}

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

func nameString(n pkix.Name) string { return n.String() }

func (s *Server) adminIssuers(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	resp, err := ca.CA().ListIssuers(r.Context(), &sdkca.ListIssuersRequest{})
	if err != nil {
		adminError(w, err)
		return
	}
	var out []IssuerInfo
	for _, is := range resp.Issuers {
		c, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			adminError(w, err)
			return
		}
		out = append(out, IssuerInfo{Name: is.Name, Algorithm: is.Algorithm, Subject: nameString(c.Subject), Issuer: nameString(c.Issuer),
			NotAfter: c.NotAfter, Default: is.Default, Family: is.Family, Generation: is.Generation, Active: is.Active || is.Generation == 0,
			KMS: is.KMS, Certificate: is.Certificate})
	}
	adminJSON(w, http.StatusOK, out)
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
	RevokedAt time.Time `json:"revoked_at,omitempty"`
	Reason    int       `json:"reason,omitempty"`
	DER       []byte    `json:"der"`
}

func (s *Server) adminCert(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	resp, err := ca.CA().GetCertificate(r.Context(), &sdkca.GetCertificateRequest{Serial: r.PathValue("serial")})
	if err != nil {
		adminError(w, err)
		return
	}
	c, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil {
		adminError(w, err)
		return
	}
	info := CertInfo{Serial: fmt.Sprintf("%032x", c.SerialNumber), Status: string(resp.Status), Subject: nameString(c.Subject),
		Issuer: nameString(c.Issuer), Algorithm: c.PublicKey.Algorithm, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		RevokedAt: resp.RevokedAt, Reason: resp.RevocationReason, DER: resp.Certificate}
	for _, d := range c.DNSNames {
		info.Names = append(info.Names, "dns:"+d)
	}
	for _, ip := range c.IPAddresses {
		info.Names = append(info.Names, "ip:"+ip.String())
	}
	for _, u := range c.URIs {
		info.Names = append(info.Names, "uri:"+u.String())
	}
	adminJSON(w, http.StatusOK, info)
}

// Reasons are the RFC 5280 CRLReason names `avon cert revoke` accepts.
var Reasons = map[string]int{"unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
	"superseded": 4, "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10}

func (s *Server) adminRevoke(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
		adminJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "detail": "want {\"reason\": \"keyCompromise\"}"})
		return
	}
	code, ok := Reasons[body.Reason]
	if !ok {
		if n, err := strconv.Atoi(body.Reason); err == nil {
			code, ok = n, true
		}
	}
	if !ok {
		adminJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "detail": fmt.Sprintf("reason %q is not an RFC 5280 CRLReason", body.Reason)})
		return
	}
	serial := r.PathValue("serial")
	actor := actorOf(r)
	// Recorded first: an operator action that cannot be audited is not done.
	if err := s.audit.Emit(r.Context(), "core", host.Event{Actor: actor, Action: "cert.revoke.request", Target: "cert/" + serial,
		Outcome: "requested", Reason: body.Reason}); err != nil {
		adminJSON(w, http.StatusServiceUnavailable, map[string]any{"status": 503, "detail": "audit: " + err.Error()})
		return
	}
	if _, err := ca.CA().Revoke(r.Context(), &sdkca.RevokeRequest{Serial: serial, Reason: code}); err != nil {
		adminError(w, err)
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"serial": serial, "revoked": true, "reason": code, "by": actor})
}

// CertList is a page of `avon cert list` (GET /v1/certs).
type CertList struct {
	Certificates []CertListEntry `json:"certificates"`
	Next         string          `json:"next,omitempty"` // pass as ?after= for the next page
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

func adminBad(w http.ResponseWriter, detail string) {
	adminJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "detail": detail})
}

func (s *Server) adminListCerts(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	q := r.URL.Query()
	req := &sdkca.ListCertificatesRequest{After: q.Get("after"), Status: sdkca.Status(q.Get("status")), Profile: q.Get("profile"),
		Issuer: q.Get("issuer")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > sdkca.MaxListLimit {
			adminBad(w, fmt.Sprintf("limit %q: want 1 to %d", l, sdkca.MaxListLimit))
			return
		}
		req.Limit = n
	}
	resp, err := ca.CA().(sdkca.CertificateLister).ListCertificates(r.Context(), req)
	if err != nil {
		adminError(w, err)
		return
	}
	out := CertList{Certificates: []CertListEntry{}, Next: resp.Next}
	for _, c := range resp.Certificates {
		out.Certificates = append(out.Certificates, CertListEntry{Serial: c.Serial, Subject: c.Subject, SANs: c.SANs, Profile: c.Profile,
			Issuer: c.Issuer, Status: string(c.Status), NotBefore: c.NotBefore, NotAfter: c.NotAfter, RevokedAt: c.RevokedAt, Reason: c.Reason})
	}
	adminJSON(w, http.StatusOK, out)
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

func (s *Server) adminRotate(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	var body RotateRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
		adminBad(w, `want {"issuer": "issuing", "kms": "hsm", "algorithm": ""}`)
		return
	}
	actor := actorOf(r)
	target := body.Issuer
	if target == "" {
		target = "issuing"
	}
	// Recorded first: an operator action that cannot be audited is not done.
	if err := s.audit.Emit(r.Context(), "core", host.Event{Actor: actor, Action: "ca.rotate.request", Target: "issuer/" + target,
		Outcome: "requested", Fields: map[string]string{"kms": body.KMS, "algorithm": body.Algorithm}}); err != nil {
		adminJSON(w, http.StatusServiceUnavailable, map[string]any{"status": 503, "detail": "audit: " + err.Error()})
		return
	}
	resp, err := ca.CA().(sdkca.Rotator).RotateIssuer(r.Context(), &sdkca.RotateRequest{Issuer: body.Issuer, KMS: body.KMS, Algorithm: body.Algorithm})
	if err != nil {
		_ = s.audit.Emit(r.Context(), "core", host.Event{Actor: actor, Action: "ca.rotate.request", Target: "issuer/" + target,
			Outcome: "failure", Reason: err.Error()})
		adminError(w, err)
		return
	}
	out := RotateResult{Issuer: resp.Issuer, Generation: resp.Generation, Serial: resp.Serial, KMS: resp.KMS, Algorithm: resp.Algorithm,
		NotAfter: resp.NotAfter, By: actor}
	if c, err := pqx509.ParseCertificate(resp.Certificate); err == nil {
		out.Subject = nameString(c.Subject)
	}
	s.log.Info("issuer rotated", "issuer", resp.Issuer, "generation", resp.Generation, "kms", resp.KMS, "by", actor)
	// Every replica's gateway re-reads the issuers (this one's too); one
	// that misses the event re-reads them on its subscription gap.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if _, err := s.events.Publish(pctx, events.CARotated, ca.Spec().Name,
		map[string]string{"issuer": resp.Issuer, "generation": strconv.Itoa(resp.Generation), "serial": resp.Serial}); err != nil {
		s.log.Warn("ca.rotated not published: gateways trust the new generation after their next event gap or restart", "error", err)
	}
	adminJSON(w, http.StatusOK, out)
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

func (s *Server) adminInit(w http.ResponseWriter, r *http.Request, ca *pluginhost.Instance) {
	var body struct {
		KMS string `json:"kms"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
		adminBad(w, `want {"kms": ""}`)
		return
	}
	actor := actorOf(r)
	if err := s.audit.Emit(r.Context(), "core", host.Event{Actor: actor, Action: "ca.init.request", Target: "ca/" + ca.Spec().Name,
		Outcome: "requested", Fields: map[string]string{"kms": body.KMS}}); err != nil {
		adminJSON(w, http.StatusServiceUnavailable, map[string]any{"status": 503, "detail": "audit: " + err.Error()})
		return
	}
	resp, err := ca.CA().(sdkca.Initializer).Initialize(r.Context(), &sdkca.InitializeRequest{KMS: body.KMS})
	if err != nil {
		adminError(w, err)
		return
	}
	out := InitResult{RootSHA256: resp.RootSHA256, RootSubject: resp.RootSubject, Root: resp.Root, By: actor, GatewayCertificate: "issued"}
	for _, is := range resp.Issuers {
		out.Issuers = append(out.Issuers, IssuerInfo{Name: is.Name, Algorithm: is.Algorithm, Family: is.Family, Generation: is.Generation,
			Active: is.Active, KMS: is.KMS, Default: is.Default, Certificate: is.Certificate})
	}
	// The gateway certificate that waited for the hierarchy.
	if err := s.ensureGatewayCertificate(r.Context()); err != nil {
		s.log.Warn("gateway certificate not issued after ca init; the next start retries", "error", err)
		out.GatewayCertificate = err.Error()
	}
	adminJSON(w, http.StatusOK, out)
}
