package tunnel_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/agent/tunnel/tunneltest"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
)

func TestSessionReplacedAfterMaxSessionAge(t *testing.T) {
	r := newRig(t, func(c *tunnel.Config, _ *tunneltest.Config) { c.Timers.MaxSessionAge = 300 * time.Millisecond })
	r.waitUp()
	r.roundTrip("first session")
	r.waitFor("two re-handshakes", func() bool { return r.eng.Status().Rehandshakes >= 2 })
	r.roundTrip("after re-handshakes")
	s := r.eng.Status()
	if s.State != tunnel.StateUp || !strings.HasPrefix(s.RehandshakeReason, "session age") || s.LastRehandshake.IsZero() {
		t.Errorf("status %+v", s)
	}
	// Every replaced session was closed at the gateway with its own keys.
	r.waitFor("old sessions closed", func() bool { st := r.gw.Stats(); return st.Closes >= 2 && st.Closes == st.Sessions-1 })
	if st := r.gw.Stats(); st.Errors != 0 || st.CookieReplies != 1 {
		t.Errorf("gateway %+v (re-handshakes carry the address token: no second cookie)", st)
	}
}

// creds is a Config.Credentials the test can switch.
type creds struct {
	mu     sync.Mutex
	signer handshake.Signer
	chain  [][]byte
	err    error
}

func (c *creds) get() (handshake.Signer, [][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signer, c.chain, c.err
}

func (c *creds) set(s handshake.Signer, chain [][]byte, err error) {
	c.mu.Lock()
	c.signer, c.chain, c.err = s, chain, err
	c.mu.Unlock()
}

// renewed issues pki's agent a new key and certificate from the same CA.
func renewed(t *testing.T, pki *tunneltest.PKI) (handshake.Signer, [][]byte) {
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
	s, err := handshake.NewMLDSA65Signer(key.PrivateKey(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s, leaf.Chain
}

func TestRenewedCertificateRehandshake(t *testing.T) {
	c := &creds{}
	r := newRig(t, func(cfg *tunnel.Config, _ *tunneltest.Config) {
		c.set(cfg.Signer, cfg.Chain, nil)
		cfg.Signer, cfg.Chain, cfg.Credentials = nil, nil, c.get
	})
	r.waitUp()
	if l := r.gw.PeerLeaves(); len(l) != 1 || !bytes.Equal(l[0], r.pki.AgentChain[0]) {
		t.Fatalf("first session's peer certificate is not the enrolled one")
	}

	// The credentials fail: the re-handshake fails and the old session
	// goes on.
	c.set(nil, nil, errors.New("key and certificate do not match"))
	r.eng.Rehandshake("certificate changed")
	r.waitFor("the failed re-handshake reported", func() bool {
		return strings.Contains(r.eng.Status().LastError, "key and certificate do not match")
	})
	if s := r.eng.Status(); s.State != tunnel.StateUp || s.Rehandshakes != 0 || !strings.Contains(s.LastError, "re-handshake (certificate changed)") {
		t.Errorf("status after a failed re-handshake %+v", s)
	}
	r.roundTrip("old session after a failed re-handshake")

	// The renewal completes: the retry uses the new certificate.
	signer, chain := renewed(t, r.pki)
	c.set(signer, chain, nil)
	r.waitFor("a session with the new certificate", func() bool {
		l := r.gw.PeerLeaves()
		return len(l) == 1 && bytes.Equal(l[0], chain[0]) && r.eng.Status().Rehandshakes == 1
	})
	r.roundTrip("new certificate")
	if s := r.eng.Status(); s.Rehandshakes != 1 || s.RehandshakeReason != "certificate changed" || s.State != tunnel.StateUp {
		t.Errorf("status %+v", s)
	}
	if st := r.gw.Stats(); st.Sessions != 2 || st.Closes != 1 || st.Errors != 0 {
		t.Errorf("gateway %+v", st)
	}
}

func TestCredentialsErrorAtConnect(t *testing.T) {
	c := &creds{err: errors.New("no key yet")}
	var good struct {
		s handshake.Signer
		c [][]byte
	}
	r := newRig(t, func(cfg *tunnel.Config, _ *tunneltest.Config) {
		good.s, good.c = cfg.Signer, cfg.Chain
		cfg.Signer, cfg.Chain, cfg.Credentials = nil, nil, c.get
	})
	r.waitFor("the credentials error", func() bool {
		s := r.eng.Status()
		return strings.Contains(s.LastError, "credentials unavailable") && strings.Contains(s.LastError, "no key yet")
	})
	c.set(good.s, good.c, nil)
	r.waitUp()
	r.roundTrip("after the credentials came")
}
