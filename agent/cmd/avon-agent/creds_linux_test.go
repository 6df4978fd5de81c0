package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/pem"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/avonzt/avon/agent/enroll"
	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/agent/tunnel/tunneltest"
	"github.com/avonzt/avon/core/handshake/handshaketest"
	"github.com/avonzt/avon/internal/atomicfile"
)

// renewFiles replaces the key and certificate files of dir as renew does
// (atomically, key first) with a new key and certificate from pki's CA;
// it returns the new leaf.
func renewFiles(t *testing.T, dir string, pki *tunneltest.PKI) []byte {
	t.Helper()
	key, err := handshaketest.NewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	leaf, err := pki.CA.IssueAgent(pki.AgentID, key, now.Add(-time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var kb, cb bytes.Buffer
	_ = pem.Encode(&kb, &pem.Block{Type: "AVON ML-DSA-65 SEED", Bytes: key.Seed[:]})
	for _, d := range leaf.Chain {
		_ = pem.Encode(&cb, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	if err := atomicfile.Write(filepath.Join(dir, enroll.KeyFile), kb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(filepath.Join(dir, enroll.CertFile), cb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return leaf.Chain[0]
}

// TestRenewedCertificateUsed runs the engine as `up` wires it (the
// credentials from the state directory, the file watcher) against the
// test gateway: after the files are replaced, the session is replaced
// and the gateway sees the new certificate.
func TestRenewedCertificateUsed(t *testing.T) {
	now := time.Now()
	pki, err := tunneltest.NewPKI("agent-0001", now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := writeState(t, pki, "127.0.0.1:3")
	cs, err := newCredSource(dir, rand.Reader, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs.close)
	binds := bindtest.NewChannelBinds()
	gw, err := tunneltest.New(tunneltest.Config{Bind: binds[1], PKI: pki, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.5/10")},
		PulseInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	id := cs.identity()
	eng, err := tunnel.New(tunnel.Config{Gateway: netip.MustParseAddrPort("127.0.0.1:3"), Credentials: cs.credentials,
		GatewayPublicKey: id.gwKey, Rand: rand.Reader, StateDir: dir,
		Timers: tunnel.Timers{BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond, Tick: 20 * time.Millisecond}},
		tuntest.NewChannelTUN().TUN(), binds[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = eng.Run(ctx); done <- struct{}{} }()
	go func() { watchCredentials(ctx, dir, 20*time.Millisecond, eng); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	wait := func(what string, cond func() bool) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		if !tunneltest.Wait(wctx, cond) {
			t.Fatalf("waiting for %s: status %+v, gateway %+v", what, eng.Status(), gw.Stats())
		}
	}
	peerIs := func(leaf []byte) func() bool {
		return func() bool { l := gw.PeerLeaves(); return len(l) == 1 && bytes.Equal(l[0], leaf) }
	}
	wait("a session with the enrolled certificate", peerIs(pki.AgentChain[0]))
	leaf := renewFiles(t, dir, pki)
	wait("a session with the renewed certificate", peerIs(leaf))
	wait("the reason in the status", func() bool {
		s := eng.Status()
		return s.State == tunnel.StateUp && s.RehandshakeReason == "certificate changed"
	})
	if got := cs.identity().leaf.Raw; !bytes.Equal(got, leaf) {
		t.Errorf("the credential source holds another certificate")
	}
}
