package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/avonzt/avon/core/adminapi"
	sdkacme "github.com/avonzt/avon/sdk/acme"
)

// EABRequest is the body of POST /v1/acme/eab.
type EABRequest struct {
	Note string `json:"note,omitempty"` // who the key is for (kept with it, audited)
}

// EABKey is an ACME external account binding key: shown once.
type EABKey struct {
	KID     string `json:"kid"`
	HMACKey string `json:"hmac_key"`
	Note    string `json:"note,omitempty"`
}

func (s *Server) acmeAdminRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "POST", Pattern: "/v1/acme/eab", Scope: adminapi.ScopeWrite, OperationID: "createACMEEAB",
			Summary: "An external account binding key for ACME clients (shown once)", Request: EABRequest{}, Response: EABKey{},
			Audit: "acme.eab.create.request", Target: "acme/eab", Handler: s.adminCreateEAB},
	}
}

// adminCreateEAB asks the acme plugin for an EAB key on its admin path
// (/admin/eab, never reachable from the network), naming the operator.
func (s *Server) adminCreateEAB(w http.ResponseWriter, r *adminapi.Request) error {
	var body EABRequest
	if _, err := r.DecodeOptional(&body); err != nil {
		return err
	}
	inst, err := s.acmeInstance()
	if err != nil {
		return adminapi.Wrap(adminapi.TypeUnavailable, err)
	}
	if inst == nil {
		return adminapi.NewProblem(adminapi.TypeUnavailable, `no acme plugin is configured (plugin "acme" "NAME" { ... })`)
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(r.Context(), acmeTimeout)
	defer cancel()
	resp, err := inst.ACME().HandleHTTP(ctx, &sdkacme.HTTPRequest{Method: http.MethodPost, Path: "/admin/eab",
		Header: http.Header{"Content-Type": {"application/json"}, "X-Avon-Admin-Actor": {r.Principal.Actor}}, Body: b})
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK {
		t := adminapi.TypeUnavailable
		if resp.Status >= 400 && resp.Status < 500 {
			t = adminapi.TypeBadRequest
		}
		detail := strings.TrimSpace(string(resp.Body))
		if len(detail) > 512 {
			detail = detail[:512]
		}
		return adminapi.NewProblem(t, fmt.Sprintf("the acme plugin answered %d: %s", resp.Status, strings.ToValidUTF8(detail, "?")))
	}
	var key EABKey
	if err := json.Unmarshal(resp.Body, &key); err != nil || key.KID == "" || key.HMACKey == "" {
		return fmt.Errorf("the acme plugin's EAB answer is not a key: %v", err)
	}
	r.AuditField("kid", key.KID)
	r.AuditField("note", body.Note)
	adminapi.JSON(w, http.StatusOK, key)
	return nil
}
