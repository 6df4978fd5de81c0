package server

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/avonzt/avon/plugins/acme/jose"
)

// authKind is how a request must be signed.
type authKind int

const (
	// byKID: an account's key, named by its URL (most requests).
	byKID authKind = iota
	// byJWK: a key embedded in the header (newAccount).
	byJWK
	// byEither: revokeCert, by the account or by the certificate's key.
	byEither
)

// verified is a POST whose JWS passed every check.
type verified struct {
	jws     *jose.JWS
	payload []byte
	key     *jose.JWK
	account *Account // nil when signed by an embedded jwk
	version int64    // the account's storage version
}

// postAsGet reports whether the payload is empty (RFC 8555 6.3).
func (v *verified) postAsGet() bool { return len(v.payload) == 0 }

// algorithms are the JWS algorithms the server accepts, for
// badSignatureAlgorithm problems.
var algorithms = []string{jose.ES256, jose.ES384, jose.EdDSA, jose.RS256}

// joseProblem maps a jose error to its problem.
func joseProblem(err error) *Problem {
	switch {
	case errors.Is(err, jose.ErrUnsupportedAlgorithm), errors.Is(err, jose.ErrAlgorithmMismatch):
		p := prob(ProbBadSignatureAlgorithm, "%v", err)
		p.Algorithms = algorithms
		return p
	case errors.Is(err, jose.ErrBadKey):
		return prob(ProbBadPublicKey, "%v", err)
	case errors.Is(err, jose.ErrBadSignature):
		return prob(ProbMalformed, "JWS verification error: %v", err)
	}
	return prob(ProbMalformed, "parse JWS: %v", err)
}

func header(r *request, name string) string {
	for k, v := range r.Header {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// verifyPOST checks a POST's JWS in Boulder's order: content type, body,
// JWS structure and algorithm, jwk-or-kid, the account (kid), the
// algorithm against the key and the signature, the nonce (consumed only
// now), the url.
func (s *Server) verifyPOST(ctx context.Context, r *request, want authKind) (*verified, *Problem) {
	if mt, _, err := mime.ParseMediaType(header(r, "Content-Type")); err != nil || mt != "application/jose+json" {
		return nil, prob(ProbMalformed, "Content-Type must be application/jose+json").withStatus(http.StatusUnsupportedMediaType)
	}
	if len(r.Body) == 0 {
		return nil, prob(ProbMalformed, "no body on POST")
	}
	j := r.jws
	if j == nil {
		var err error
		if j, err = jose.Parse(r.Body); err != nil {
			return nil, joseProblem(err)
		}
	}
	h := j.Header
	v := &verified{jws: j, payload: j.Payload}
	switch {
	case h.HasJWK && h.HasKID:
		return nil, prob(ProbMalformed, "jwk and kid header fields are mutually exclusive")
	case !h.HasJWK && !h.HasKID:
		return nil, prob(ProbMalformed, "JWS has neither jwk nor kid")
	case want == byKID && h.HasJWK:
		return nil, prob(ProbMalformed, "this request must be signed by an account key named by kid, not an embedded jwk")
	case want == byJWK && h.HasKID:
		return nil, prob(ProbMalformed, "this request must be signed by a key embedded as jwk, not kid")
	}
	if h.HasKID {
		acct, ver, p := s.accountByKID(ctx, r, h.KID)
		if p != nil {
			return nil, p
		}
		k, err := jose.ParseJWK(acct.Key)
		if err != nil {
			return nil, internal("stored account key", err)
		}
		v.key, v.account, v.version = k, acct, ver
	} else {
		v.key = h.JWK
	}
	if err := j.Verify(v.key); err != nil {
		return nil, joseProblem(err)
	}
	if p := s.consumeNonce(ctx, r, h); p != nil {
		return nil, p
	}
	if !h.HasURL || h.URL == "" {
		return nil, prob(ProbMalformed, "JWS header parameter 'url' required")
	}
	if h.URL != r.url(r.Path) {
		return nil, prob(ProbUnauthorized, "JWS header parameter 'url' incorrect: %q is not %q", h.URL, r.url(r.Path))
	}
	return v, nil
}

// consumeNonce checks the header's nonce and uses it up (or takes the
// verdict of the use readAhead started). A cache outage fails closed.
func (s *Server) consumeNonce(ctx context.Context, r *request, h jose.Header) *Problem {
	if !h.HasNonce || h.Nonce == "" {
		return prob(ProbBadNonce, "JWS has no anti-replay nonce")
	}
	var err error
	if pn := r.nonce; pn != nil && pn.n == h.Nonce {
		select {
		case <-pn.done:
			err = pn.err
		case <-ctx.Done():
			err = ctx.Err()
		}
	} else {
		err = s.useNonce(ctx, h.Nonce)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNonceMalformed):
		return prob(ProbBadNonce, "JWS has an invalid anti-replay nonce")
	case errors.Is(err, errNonceUnknown):
		return prob(ProbBadNonce, "JWS has an invalid anti-replay nonce: %v", err)
	}
	return internal("nonce check", err)
}

// accountByKID loads the account a kid names; it must be valid.
func (s *Server) accountByKID(ctx context.Context, r *request, kid string) (*Account, int64, *Problem) {
	id, ok := strings.CutPrefix(kid, r.url("/account/"))
	if !ok || id == "" || strings.Contains(id, "/") {
		return nil, 0, prob(ProbMalformed, "kid %q is not an account URL of this server", kid)
	}
	acct, ver, p := s.loadAccount(ctx, r, id)
	if p != nil {
		return nil, 0, p
	}
	if acct.Status != StatusValid {
		return nil, 0, prob(ProbUnauthorized, "account is not valid, has status %q", acct.Status)
	}
	return acct, ver, nil
}

func (s *Server) loadAccount(ctx context.Context, r *request, id string) (*Account, int64, *Problem) {
	if !validID(id) {
		return nil, 0, prob(ProbAccountDoesNotExist, "no account %q", id)
	}
	var a Account
	ver, err := s.getJSON(ctx, r, pfxAccount+id, &a)
	if isNotFound(err) {
		return nil, 0, prob(ProbAccountDoesNotExist, "no account %q", id)
	}
	if err != nil {
		return nil, 0, internal("load account", err)
	}
	return &a, ver, nil
}

// validID accepts what randomID makes (and serials): short, URL-safe.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decodePayload parses a JSON payload strictly (unknown fields are
// allowed, as RFC 8555 requires of servers; trailing data is not).
func decodePayload(payload []byte, v any) *Problem {
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	if err := dec.Decode(v); err != nil {
		return prob(ProbMalformed, "request payload did not parse as JSON: %v", err)
	}
	if dec.More() {
		return prob(ProbMalformed, "request payload has data after the JSON object")
	}
	return nil
}
