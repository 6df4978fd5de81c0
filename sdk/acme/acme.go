// Package acme defines the ACME server plugin kind. The core serves
// /acme/* on its HTTPS listener and forwards each request to the plugin,
// which implements RFC 8555 and keeps its state through the host storage
// service; certificates come from the CA plugin it is wired to.
//
// The package does no I/O; the gRPC shim lives in acme/acmerpc.
package acme

import (
	"context"
	"time"
)

// MaxBodySize bounds a forwarded request body.
const MaxBodySize = 1 << 20

// Server is the interface every ACME plugin implements.
type Server interface {
	// HandleHTTP answers one HTTP request. Protocol errors are responses
	// (RFC 8555 problem documents), not Go errors; an error means the
	// plugin could not answer at all. ErrBodyTooLarge for an oversized body.
	HandleHTTP(ctx context.Context, req *HTTPRequest) (*HTTPResponse, error)
}

// Maintainer is an optional capability: periodic clean-up (expired nonces,
// orders, authorizations), called by the core on a timer.
type Maintainer interface {
	Tick(ctx context.Context, req *TickRequest) (*TickResponse, error)
}

type (
	HTTPRequest struct {
		Method     string
		Path       string // relative to the mount point, e.g. "/new-order"
		RawQuery   string
		Header     map[string][]string
		Body       []byte
		RemoteAddr string
		BaseURL    string // external URL of the mount point, e.g. https://avon.example:8443/acme
	}
	HTTPResponse struct {
		Status int
		Header map[string][]string
		Body   []byte
	}
	TickRequest  struct{ Now time.Time }
	TickResponse struct{}
)
