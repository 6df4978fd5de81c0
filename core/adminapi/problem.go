package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ProblemBase prefixes every problem type URI.
const ProblemBase = "https://avon.dev/problems/"

// ProblemType is one kind of problem: its slug (the last segment of the
// type URI), its title and its HTTP status.
type ProblemType struct {
	Slug   string
	Title  string
	Status int
}

// URI returns the type URI of t.
func (t ProblemType) URI() string { return ProblemBase + t.Slug }

// The problem types of the Admin API. docs/admin-api.md lists them; a
// client may switch on the type URI, never on the title or detail.
var (
	TypeBadRequest           = ProblemType{"bad-request", "Bad request", http.StatusBadRequest}
	TypeInvalidJSON          = ProblemType{"invalid-json", "Request body is not valid", http.StatusBadRequest}
	TypeInvalidPageToken     = ProblemType{"invalid-page-token", "Invalid page token", http.StatusBadRequest}
	TypeInvalidPolicy        = ProblemType{"invalid-policy", "Policy set does not validate", http.StatusUnprocessableEntity}
	TypeUnauthenticated      = ProblemType{"unauthenticated", "Authentication required", http.StatusUnauthorized}
	TypeForbidden            = ProblemType{"forbidden", "Scope not granted", http.StatusForbidden}
	TypeNotFound             = ProblemType{"not-found", "Not found", http.StatusNotFound}
	TypeRouteNotFound        = ProblemType{"route-not-found", "No such route", http.StatusNotFound}
	TypeMethodNotAllowed     = ProblemType{"method-not-allowed", "Method not allowed", http.StatusMethodNotAllowed}
	TypeConflict             = ProblemType{"conflict", "Conflict", http.StatusConflict}
	TypePreconditionFailed   = ProblemType{"precondition-failed", "The resource changed (If-Match does not match)", http.StatusPreconditionFailed}
	TypePayloadTooLarge      = ProblemType{"payload-too-large", "Request body too large", http.StatusRequestEntityTooLarge}
	TypeUnsupportedMedia     = ProblemType{"unsupported-media-type", "Request body must be application/json", http.StatusUnsupportedMediaType}
	TypePreconditionRequired = ProblemType{"precondition-required", "If-Match required", http.StatusPreconditionRequired}
	TypeInternal             = ProblemType{"internal", "Internal error", http.StatusInternalServerError}
	TypeNotImplemented       = ProblemType{"not-implemented", "Not implemented", http.StatusNotImplemented}
	TypeUnavailable          = ProblemType{"unavailable", "Service unavailable", http.StatusServiceUnavailable}
	TypeAuditUnavailable     = ProblemType{"audit-unavailable", "The change could not be audited, so it was not made", http.StatusServiceUnavailable}
	TypeNoPolicyEngine       = ProblemType{"no-policy-engine", "No policy engine is configured", http.StatusServiceUnavailable}
)

// ProblemTypes lists every problem type, for the documentation test.
var ProblemTypes = []ProblemType{TypeBadRequest, TypeInvalidJSON, TypeInvalidPageToken, TypeInvalidPolicy, TypeUnauthenticated,
	TypeForbidden, TypeNotFound, TypeRouteNotFound, TypeMethodNotAllowed, TypeConflict, TypePreconditionFailed, TypePayloadTooLarge,
	TypeUnsupportedMedia, TypePreconditionRequired, TypeInternal, TypeNotImplemented, TypeUnavailable, TypeAuditUnavailable,
	TypeNoPolicyEngine}

// Problem is an RFC 9457 problem details object. It is also an error, so
// handlers return it.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"` // the request path
	// RequestID is an extension member: the request's X-Request-Id, to
	// find the request in the logs and the audit log.
	RequestID string `json:"request_id,omitempty"`
	// Diagnostics is an extension member some problems carry (policy
	// validation positions).
	Diagnostics any `json:"diagnostics,omitempty"`

	err error // the cause, for errors.Is/As and the log; never serialized
}

// NewProblem returns a problem of type t with detail.
func NewProblem(t ProblemType, detail string) *Problem {
	return &Problem{Type: t.URI(), Title: t.Title, Status: t.Status, Detail: detail}
}

// Problemf returns a problem of type t with a formatted detail; a %w verb
// keeps the cause for errors.Is.
func Problemf(t ProblemType, format string, args ...any) *Problem {
	err := fmt.Errorf(format, args...)
	p := NewProblem(t, err.Error())
	p.err = err
	return p
}

// Wrap returns a problem of type t whose detail is err's text and whose
// cause is err.
func Wrap(t ProblemType, err error) *Problem {
	p := NewProblem(t, err.Error())
	p.err = err
	return p
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Title)
}

// Unwrap returns the cause.
func (p *Problem) Unwrap() error { return p.err }

// Is matches a problem of the same type URI.
func (p *Problem) Is(target error) bool {
	t, ok := target.(*Problem)
	return ok && t.Type == p.Type
}

// writeProblem sends p; the caller set Instance and RequestID.
func writeProblem(w http.ResponseWriter, p *Problem) {
	b, err := json.Marshal(p)
	if err != nil { // Diagnostics that do not marshal
		q := *p
		q.Diagnostics = nil
		b, _ = json.Marshal(&q)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Del("ETag")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}
