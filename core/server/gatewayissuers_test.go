package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/handshake"
	sdkca "github.com/avonzt/avon/sdk/ca"
)

// TestGatewayLearnsRotatedIssuer runs kms-soft and ca-dilithium as plugin
// processes and the gateway's verifier over them with its ca.rotated
// watcher: after `avon ca rotate` through the admin socket the verifier
// accepts an agent that sends only its leaf of the new generation (which a
// verifier built before the rotation refuses), still accepts the previous
// generation's agents, and still asks the CA for the status of the leaf.
func TestGatewayLearnsRotatedIssuer(t *testing.T) {
	s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+caConfig(t)))
	ctx := context.Background()
	inst, ok := s.Plugins().Get("ca", "dilithium")
	if !ok {
		t.Fatal("no ca plugin")
	}
	ca := inst.CA()
	issue := func(id string) *sdkca.IssueResponse {
		t.Helper()
		resp, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: agentCSRFor(t, id), Profile: "agent"})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	cas := s.caPlugins()
	status := newStatusCache(caStatus(cas), time.Now)
	v, err := newIssuerVerifier(ctx, cas, status.Revoked)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := newIssuerVerifier(ctx, cas, status.Revoked) // no watcher: the verifier as built at start
	if err != nil {
		t.Fatal(err)
	}
	refreshed := make(chan error, 16)
	stop, err := watchIssuers(ctx, s.events, v, hclog.NewNullLogger(), func(err error) { refreshed <- err })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	before := issue("before")
	if p, err := v.VerifyChain([][]byte{before.Certificate}, time.Now()); err != nil || p.ID != "before" {
		t.Fatalf("generation 1 leaf before the rotation: %+v %v", p, err)
	}

	var rot RotateResult
	if code := adminPost(t, adminHTTP(s), "/v1/ca/rotate", RotateRequest{}, &rot); code != 200 || rot.Generation != 2 {
		t.Fatalf("rotate: %d %+v", code, rot)
	}
	select {
	case err := <-refreshed:
		if err != nil {
			t.Fatalf("refresh after ca.rotated: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the watcher did not re-read the issuers within a minute of the rotation")
	}

	after := issue("after")
	if _, err := stale.VerifyChain([][]byte{after.Certificate}, time.Now()); !errors.Is(err, handshake.ErrCertificate) {
		t.Fatalf("a verifier from before the rotation on a generation 2 leaf: %v, want ErrCertificate", err)
	}
	if p, err := v.VerifyChain([][]byte{after.Certificate}, time.Now()); err != nil || p.ID != "after" {
		t.Fatalf("generation 2 leaf alone after the rotation: %+v %v", p, err)
	}
	if p, err := v.VerifyChain([][]byte{before.Certificate}, time.Now()); err != nil || p.ID != "before" {
		t.Fatalf("generation 1 leaf after the rotation: %+v %v", p, err)
	}

	// The swapped verifier keeps the status check.
	if _, err := ca.Revoke(ctx, &sdkca.RevokeRequest{Serial: after.Serial, Reason: 1}); err != nil {
		t.Fatal(err)
	}
	status.Invalidate()
	if _, err := v.VerifyChain([][]byte{after.Certificate}, time.Now()); !errors.Is(err, handshake.ErrRevoked) {
		t.Fatalf("revoked generation 2 leaf: %v, want ErrRevoked", err)
	}
}
