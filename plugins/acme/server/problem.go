package server

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ProblemType is an RFC 8555 section 6.7 error type (the part after
// "urn:ietf:params:acme:error:").
type ProblemType string

// Problem types the server uses.
const (
	ProbAccountDoesNotExist     ProblemType = "accountDoesNotExist"
	ProbAlreadyRevoked          ProblemType = "alreadyRevoked"
	ProbBadCSR                  ProblemType = "badCSR"
	ProbBadNonce                ProblemType = "badNonce"
	ProbBadPublicKey            ProblemType = "badPublicKey"
	ProbBadRevocationReason     ProblemType = "badRevocationReason"
	ProbBadSignatureAlgorithm   ProblemType = "badSignatureAlgorithm"
	ProbConnection              ProblemType = "connection"
	ProbDNS                     ProblemType = "dns"
	ProbExternalAccountRequired ProblemType = "externalAccountRequired"
	ProbIncorrectResponse       ProblemType = "incorrectResponse"
	ProbInvalidContact          ProblemType = "invalidContact"
	ProbInvalidProfile          ProblemType = "invalidProfile"
	ProbMalformed               ProblemType = "malformed"
	ProbOrderNotReady           ProblemType = "orderNotReady"
	ProbRateLimited             ProblemType = "rateLimited"
	ProbRejectedIdentifier      ProblemType = "rejectedIdentifier"
	ProbServerInternal          ProblemType = "serverInternal"
	ProbTLS                     ProblemType = "tls"
	ProbUnauthorized            ProblemType = "unauthorized"
	ProbUnsupportedContact      ProblemType = "unsupportedContact"
	ProbUnsupportedIdentifier   ProblemType = "unsupportedIdentifier"
	ProbUserActionRequired      ProblemType = "userActionRequired"
)

// URN is the problem type's full URI.
func (t ProblemType) URN() string { return "urn:ietf:params:acme:error:" + string(t) }

// Problem is an RFC 7807 problem document as RFC 8555 uses it.
type Problem struct {
	Type        string      `json:"type"`
	Detail      string      `json:"detail,omitempty"`
	Status      int         `json:"status,omitempty"`
	Identifier  *Identifier `json:"identifier,omitempty"`
	Subproblems []Problem   `json:"subproblems,omitempty"`
	Algorithms  []string    `json:"algorithms,omitempty"` // badSignatureAlgorithm
	header      http.Header // extra response headers (Location, Retry-After)
	kind        ProblemType
}

func (p *Problem) Error() string { return fmt.Sprintf("%s: %s", p.kind, p.Detail) }

// Kind returns the problem's type.
func (p *Problem) Kind() ProblemType { return p.kind }

// defaultStatus is the HTTP status of each type unless said otherwise.
var defaultStatus = map[ProblemType]int{
	ProbUnauthorized:       http.StatusForbidden,
	ProbOrderNotReady:      http.StatusForbidden,
	ProbUserActionRequired: http.StatusForbidden,
	ProbRateLimited:        http.StatusTooManyRequests,
	ProbServerInternal:     http.StatusInternalServerError,
}

// prob makes a problem of type t with a formatted detail.
func prob(t ProblemType, format string, args ...any) *Problem {
	st, ok := defaultStatus[t]
	if !ok {
		st = http.StatusBadRequest
	}
	return &Problem{Type: t.URN(), Detail: fmt.Sprintf(format, args...), Status: st, kind: t}
}

// withStatus overrides the HTTP status.
func (p *Problem) withStatus(code int) *Problem { p.Status = code; return p }

// withHeader adds a response header.
func (p *Problem) withHeader(k, v string) *Problem {
	if p.header == nil {
		p.header = http.Header{}
	}
	p.header.Add(k, v)
	return p
}

// stored is the problem as kept in a record (challenge and order errors).
func (p *Problem) stored() *Problem {
	if p == nil {
		return nil
	}
	c := *p
	c.header = nil
	return &c
}

func (p *Problem) body() []byte {
	b, _ := json.Marshal(p)
	return b
}

// NewProblem makes a problem of type t, for validators outside this
// package.
func NewProblem(t ProblemType, detail string) *Problem { return prob(t, "%s", detail) }
