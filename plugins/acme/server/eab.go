package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/host"
)

// timeHour is the rate-limit window.
const timeHour = time.Hour

// checkEAB verifies an external account binding (RFC 8555 7.3.4) for the
// account key and returns the unbound EAB key with its version.
func (s *Server) checkEAB(ctx context.Context, r *request, raw json.RawMessage, key *jose.JWK) (*EABKey, int64, *Problem) {
	e, err := jose.ParseEAB(raw)
	if err != nil {
		if errors.Is(err, jose.ErrUnsupportedAlgorithm) {
			p := prob(ProbBadSignatureAlgorithm, "%v", err)
			p.Algorithms = []string{jose.HS256}
			return nil, 0, p
		}
		return nil, 0, prob(ProbMalformed, "%v", err)
	}
	if e.URL != r.url(r.Path) {
		return nil, 0, prob(ProbMalformed, "externalAccountBinding url %q is not %q", e.URL, r.url(r.Path))
	}
	if !validID(e.KID) {
		return nil, 0, prob(ProbUnauthorized, "unknown external account binding key %q", e.KID)
	}
	var k EABKey
	ver, err := getJSON(ctx, s.deps.Storage, pfxEAB+e.KID, &k)
	if isNotFound(err) {
		return nil, 0, prob(ProbUnauthorized, "unknown external account binding key %q", e.KID)
	}
	if err != nil {
		return nil, 0, internal("load EAB key", err)
	}
	if err := e.Verify(k.Key); err != nil {
		return nil, 0, prob(ProbUnauthorized, "external account binding does not verify with key %q", e.KID)
	}
	if k.Account != "" {
		return nil, 0, prob(ProbUnauthorized, "external account binding key %q is already bound to an account", e.KID)
	}
	bound, err := jose.ParseJWK(e.Payload)
	if err != nil || !bound.Equal(key) {
		return nil, 0, prob(ProbMalformed, "externalAccountBinding payload is not the account's key")
	}
	return &k, ver, nil
}

// CreateEAB makes an external account binding key: a fresh key id and a
// 256-bit HMAC key, stored unbound. The operator hands both to the client
// (lego --eab --kid --hmac; certbot --eab-kid --eab-hmac-key).
func (s *Server) CreateEAB(ctx context.Context, note string) (kid string, hmacKey string, err error) {
	now, err := s.clock(ctx)
	if err != nil {
		return "", "", err
	}
	kid, err = s.randomID()
	if err != nil {
		return "", "", err
	}
	key := make([]byte, 32)
	if _, err := io.ReadFull(s.deps.Rand, key); err != nil {
		return "", "", fmt.Errorf("random: %w", err)
	}
	if _, err := putJSON(ctx, s.deps.Storage, pfxEAB+kid, &EABKey{KID: kid, Key: key, CreatedAt: now, Note: note}, true, 0); err != nil {
		return "", "", fmt.Errorf("store EAB key: %w", err)
	}
	return kid, jose.Encode(key), nil
}

// adminEAB answers the core's admin route: a new EAB key, audited with the
// operator the core names in X-Avon-Admin-Actor.
func (s *Server) adminEAB(ctx context.Context, r *request) (*response, *Problem) {
	var in struct {
		Note string `json:"note"`
	}
	if len(r.Body) > 0 {
		if p := decodePayload(r.Body, &in); p != nil {
			return nil, p
		}
	}
	if len(in.Note) > 256 {
		return nil, prob(ProbMalformed, "note longer than 256 bytes")
	}
	kid, key, err := s.CreateEAB(ctx, in.Note)
	if err != nil {
		return nil, internal("create EAB key", err)
	}
	if err := s.deps.Audit(ctx, host.Event{Action: "acme.eab.create", Target: "eab/" + kid, Outcome: "success",
		Actor: header(r, "X-Avon-Admin-Actor"), Fields: map[string]string{"note": in.Note}}); err != nil {
		_ = s.deps.Storage.Delete(ctx, pfxEAB+kid, host.DeleteOptions{})
		return nil, internal("audit", err)
	}
	return jsonResponse(http.StatusOK, map[string]string{"kid": kid, "hmac_key": key, "note": in.Note}), nil
}
