package adminapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkServeGet is one authenticated GET through the framework (route,
// request id, authentication, handler, JSON), without a network.
func BenchmarkServeGet(b *testing.B) {
	ws := newWidgets(100)
	a, err := New(ws.routes(), Options{Authenticator: headerAuth, Auditor: &recorder{}})
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/v1/widgets/w042", nil)
	req.Header.Set("X-Test-Actor", "alice")
	req.Header.Set("X-Test-Scopes", "admin:read")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		a.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkDecodeStrict checks and decodes a typical small body.
func BenchmarkDecodeStrict(b *testing.B) {
	body := []byte(`{"disabled": true, "reason": "` + strings.Repeat("x", 100) + `"}`)
	var v struct {
		Disabled bool   `json:"disabled"`
		Reason   string `json:"reason"`
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeStrict(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPageToken encodes and decodes one token.
func BenchmarkPageToken(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		tok := EncodePageToken("agents?group=eng&disabled=false", "4be1c0d2a9e87f1102aa93c1")
		if _, err := DecodePageToken("agents?group=eng&disabled=false", tok); err != nil {
			b.Fatal(err)
		}
	}
}
