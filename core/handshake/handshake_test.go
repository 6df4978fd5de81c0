package handshake

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
)

func TestHandshakeKeysAgree(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name  string
		aead  AEADID
		token []byte
	}{
		{"aes-gcm", AES256GCM, nil},
		{"chacha20-poly1305", ChaCha20Poly1305, nil},
		{"default aead with token", 0, bytes.Repeat([]byte{0xa5}, MaxTokenLen)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub,
				AEAD: tc.aead, Rand: f.rand, Now: fixedNow, LocalIndex: 0x11111111})
			if err != nil {
				t.Fatal(err)
			}
			r := f.responder(t, fixedNow)
			init, err := in.Initiation(tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if len(init) != InitiationMinLen+len(tc.token) || !bytes.Equal(init[len(init)-2*MACLen:], make([]byte, 2*MACLen)) {
				t.Fatalf("initiation of %d bytes, macs %x", len(init), init[len(init)-2*MACLen:])
			}
			resp, p, err := r.HandleInitiation(init, 0x22222222)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp) != ResponseLen || ResponseLen != 4493 {
				t.Fatalf("response of %d bytes", len(resp))
			}
			fin, ri, err := in.HandleResponse(resp)
			if err != nil {
				t.Fatal(err)
			}
			if want := FinishMinLen - 1 + len(f.chain[0]) + len(f.chain[1]); len(fin) != want {
				t.Fatalf("finish of %d bytes, want %d", len(fin), want)
			}
			rr, err := p.HandleFinish(fin)
			if err != nil {
				t.Fatal(err)
			}
			wantAEAD := tc.aead
			if wantAEAD == 0 {
				wantAEAD = AES256GCM
			}
			if ri.SendKey != rr.RecvKey || ri.RecvKey != rr.SendKey || ri.RekeySecret != rr.RekeySecret || ri.SessionID != rr.SessionID {
				t.Fatal("keys differ between the sides")
			}
			if ri.SendKey == ri.RecvKey || ri.SendKey == ri.RekeySecret || ri.SendKey == ([32]byte{}) {
				t.Fatal("directional keys are not distinct")
			}
			if ri.AEAD != wantAEAD || rr.AEAD != wantAEAD || !ri.Initiator || rr.Initiator {
				t.Fatalf("aead %s/%s, roles %v/%v", ri.AEAD, rr.AEAD, ri.Initiator, rr.Initiator)
			}
			if ri.LocalIndex != 0x11111111 || ri.RemoteIndex != 0x22222222 || rr.LocalIndex != 0x22222222 || rr.RemoteIndex != 0x11111111 {
				t.Fatalf("indexes %x/%x %x/%x", ri.LocalIndex, ri.RemoteIndex, rr.LocalIndex, rr.RemoteIndex)
			}
			if rr.Peer.ID != "agent-0001" || !bytes.Equal(rr.Peer.PublicKey, f.agentSigner.Public()) || !bytes.Equal(rr.Peer.Leaf, f.chain[0]) {
				t.Fatalf("responder's peer %q", rr.Peer.ID)
			}
			if !rr.Peer.NotAfter.Equal(testNow.Add(24 * time.Hour)) {
				t.Fatalf("peer NotAfter %v", rr.Peer.NotAfter)
			}
			if ri.Peer.ID != gatewayPeerID(f.gwID) || !bytes.Equal(ri.Peer.PublicKey, f.gwPub) {
				t.Fatalf("initiator's peer %q", ri.Peer.ID)
			}
			if !ri.Established.Equal(testNow) || !rr.Established.Equal(testNow) {
				t.Fatal("established time not the calibrated clock's")
			}
			// Single use.
			if _, err := p.HandleFinish(fin); !errors.Is(err, ErrState) {
				t.Fatalf("second finish: %v", err)
			}
			// The gateway refuses by policy after the handshake: authenticated.
			msg, ok := p.ErrorFor(fmt.Errorf("policy: %w", ErrNotAuthorized))
			if !ok {
				t.Fatal("no not_authorized message after success")
			}
			if info, err := in.HandleError(msg); err != nil || !info.Authenticated || info.Code != CodeNotAuthorized {
				t.Fatalf("not_authorized: %+v %v", info, err)
			}
			p.Zeroize()
			if _, ok := p.ErrorFor(ErrNotAuthorized); ok {
				t.Fatal("error message after zeroize")
			}
			if _, _, err := in.HandleResponse(resp); !errors.Is(err, ErrState) {
				t.Fatalf("second response: %v", err)
			}
			if _, err := in.Initiation(nil); !errors.Is(err, ErrState) {
				t.Fatalf("initiation after done: %v", err)
			}
			rr.Zeroize()
			if rr.SendKey != ([32]byte{}) || rr.RekeySecret != ([32]byte{}) {
				t.Fatal("zeroize left key material")
			}
		})
	}
}

// A forged Response or Finish (wrong bytes anywhere) is refused and leaves
// the state machine where it was: the real message still completes.
func TestBitFlipResponseAndFinish(t *testing.T) {
	f := newFixture(t)
	in := f.initiator(t, 7, fixedNow)
	r := f.responder(t, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, p, err := r.HandleInitiation(init, 9)
	if err != nil {
		t.Fatal(err)
	}
	respWant := func(i int) []error {
		switch {
		case i == 0, i == 2, i == 3:
			return []error{ErrMalformed}
		case i == 1:
			return []error{ErrVersion}
		case i >= 8 && i < 12:
			return []error{ErrIndex}
		}
		return []error{ErrDecrypt} // sender_index and ct are in th2; enc_r is the AEAD
	}
	for i := range resp {
		bad := bytes.Clone(resp)
		bad[i] ^= 0x01
		_, _, err := in.HandleResponse(bad)
		if !isAny(err, respWant(i)) {
			t.Fatalf("response byte %d flipped: %v, want %v", i, err, respWant(i))
		}
	}
	fin, _, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatalf("genuine response after forgeries: %v", err)
	}
	finWant := func(i int) []error {
		switch {
		case i == 0, i == 2, i == 3:
			return []error{ErrMalformed}
		case i == 1:
			return []error{ErrVersion}
		case i >= 4 && i < 8:
			return []error{ErrIndex}
		}
		return []error{ErrDecrypt}
	}
	for i := range fin {
		bad := bytes.Clone(fin)
		bad[i] ^= 0x01
		if _, err := p.HandleFinish(bad); !isAny(err, finWant(i)) {
			t.Fatalf("finish byte %d flipped: %v, want %v", i, err, finWant(i))
		}
	}
	if _, err := p.HandleFinish(fin); err != nil {
		t.Fatalf("genuine finish after forgeries: %v", err)
	}
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// Every byte of the Initiation before the MACs is bound: a flip is refused
// by the responder or makes the handshake fail at the initiator, with the
// error the field predicts. The MAC bytes are core/tunnel/cookie's.
func TestBitFlipInitiation(t *testing.T) {
	f := newFixture(t)
	in := f.initiator(t, 7, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Which error a flip of bit 0 at offset i must give, at the responder
	// (first list) or else at the initiator handling the Response.
	want := func(i int) []error {
		switch {
		case i == 0, i == 2, i == 3:
			return []error{ErrMalformed}
		case i == 1:
			return []error{ErrVersion}
		case i >= 4 && i < 8: // sender_index: the Response goes to another index
			return []error{ErrIndex}
		case i >= 8 && i < 12:
			return []error{ErrSuite}
		case i >= 12 && i < 15: // timestamp bits worth >= 2^40 ns
			return []error{ErrClockSkew}
		case i >= 15 && i < 20: // within the skew: th1 differs
			return []error{ErrDecrypt}
		case i >= 20 && i < 52: // nonce_i
			return []error{ErrDecrypt}
		case i >= 52 && i < 84:
			return []error{ErrUnknownResponder}
		case i == 84: // token_len 256
			return []error{ErrMalformed}
		case i == 85: // token_len 1, no token byte
			return []error{ErrTruncated}
		}
		return []error{ErrKey, ErrDecrypt} // epk_i: modulus check, or another key
	}
	seen := map[error]int{}
	for i := range len(init) - 2*MACLen {
		bad := bytes.Clone(init)
		bad[i] ^= 0x01
		r := f.responder(t, fixedNow)
		resp, _, err := r.HandleInitiation(bad, 9)
		if err == nil {
			probe := *in // same ephemeral key and th1; HandleResponse on a copy keeps in usable
			_, _, err = probe.HandleResponse(resp)
		}
		if err == nil || !isAny(err, want(i)) {
			t.Fatalf("initiation byte %d flipped: %v, want %v", i, err, want(i))
		}
		for _, e := range want(i) {
			if errors.Is(err, e) {
				seen[e]++
			}
		}
	}
	t.Logf("refusals by error: %v", seen)
	// The MACs are not in the transcript: changing them changes nothing here.
	bad := bytes.Clone(init)
	bad[len(bad)-1] ^= 0xff
	bad[len(bad)-MACLen-1] ^= 0xff
	resp, p, err := f.responder(t, fixedNow).HandleInitiation(bad, 9)
	if err != nil {
		t.Fatal(err)
	}
	fin, _, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatalf("mac bytes changed the transcript: %v", err)
	}
	if _, err := p.HandleFinish(fin); err != nil {
		t.Fatal(err)
	}
}

func TestTruncations(t *testing.T) {
	f := newFixture(t)
	in := f.initiator(t, 1, fixedNow)
	r := f.responder(t, fixedNow)
	init, err := in.Initiation([]byte("token"))
	if err != nil {
		t.Fatal(err)
	}
	resp, p, err := r.HandleInitiation(init, 2)
	if err != nil {
		t.Fatal(err)
	}
	fin, ri, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := p.HandleFinish(fin)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := NewRekeyInitiator(ri, f.rand, fixedNow, 3)
	if err != nil {
		t.Fatal(err)
	}
	rkInit, err := rk.RekeyInit()
	if err != nil {
		t.Fatal(err)
	}
	rkResp, _, err := HandleRekeyInit(rr, rkInit, f.rand, fixedNow, 4)
	if err != nil {
		t.Fatal(err)
	}
	hsErr := r.ErrorMessage(1, CodeBusy, "try later")
	// A second initiator waiting for a Response, for the handler cases.
	waiting := f.initiator(t, 1, fixedNow)
	winit, err := waiting.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	wresp, _, err := f.responder(t, fixedNow).HandleInitiation(winit, 2)
	if err != nil {
		t.Fatal(err)
	}
	parsers := []struct {
		name  string
		msg   []byte
		parse func([]byte) error
	}{
		{"initiation", init, func(b []byte) error { _, err := ParseInitiation(b); return err }},
		{"initiation/handle", init, func(b []byte) error { _, _, err := f.responder(t, fixedNow).HandleInitiation(b, 2); return err }},
		{"response", resp, func(b []byte) error { _, err := ParseResponse(b); return err }},
		{"response/handle", wresp, func(b []byte) error { _, _, err := waiting.HandleResponse(b); return err }},
		{"finish", fin, func(b []byte) error { _, err := ParseFinish(b); return err }},
		{"rekey-init", rkInit, func(b []byte) error { _, err := ParseRekey(b, TypeRekeyInit); return err }},
		{"rekey-resp", rkResp, func(b []byte) error { _, err := ParseRekey(b, TypeRekeyResp); return err }},
		{"handshake-error", hsErr, func(b []byte) error { _, err := ParseHandshakeError(b); return err }},
		{"handshake-error/handle", hsErr, func(b []byte) error { _, err := in.HandleError(b); return err }},
	}
	for _, tc := range parsers {
		t.Run(tc.name, func(t *testing.T) {
			step := 1
			if tc.name == "initiation/handle" || tc.name == "response/handle" {
				step = 7 // handlers are slower; every 7th length plus the last 64
			}
			for n := 0; n < len(tc.msg); n++ {
				if n%step != 0 && n < len(tc.msg)-64 {
					continue
				}
				err := tc.parse(tc.msg[:n])
				if tc.name == "finish" && n >= FinishMinLen {
					if err != nil { // the exact length is inside the AEAD
						t.Fatalf("finish length %d: %v", n, err)
					}
					continue
				}
				if !isAny(err, []error{ErrTruncated}) {
					t.Fatalf("length %d of %d: %v, want ErrTruncated", n, len(tc.msg), err)
				}
			}
			if err := tc.parse(tc.msg); err != nil { // last: a handler's success is final
				t.Fatalf("whole message: %v", err)
			}
		})
	}
	// A Finish shorter than sent but above the minimum parses; the AEAD
	// refuses it, and the pending handshake stays open.
	p2 := newPending(t, f)
	for n := 0; n < len(p2.fin); n++ {
		_, err := p2.p.HandleFinish(p2.fin[:n])
		want := ErrTruncated
		if n >= FinishMinLen {
			want = ErrDecrypt
		}
		if !errors.Is(err, want) {
			t.Fatalf("finish length %d: %v, want %v", n, err, want)
		}
	}
	if _, err := p2.p.HandleFinish(p2.fin); err != nil {
		t.Fatal(err)
	}
	// Longer than the layout allows.
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"initiation", func() error { _, err := ParseInitiation(append(bytes.Clone(init), 0)); return err }()},
		{"response", func() error { _, err := ParseResponse(append(bytes.Clone(resp), 0)); return err }()},
		{"finish", func() error {
			_, err := ParseFinish(append(bytes.Clone(fin), make([]byte, FinishMaxLen+1-len(fin))...))
			return err
		}()},
		{"rekey", func() error { _, err := ParseRekey(append(bytes.Clone(rkInit), 0), TypeRekeyInit); return err }()},
		{"error", func() error { _, err := ParseHandshakeError(append(bytes.Clone(hsErr), 0)); return err }()},
	} {
		if !errors.Is(tc.err, ErrMalformed) {
			t.Errorf("%s one byte too long: %v", tc.name, tc.err)
		}
	}
}

type pendingRun struct {
	in  *Initiator
	p   *PendingHandshake
	fin []byte
	ri  *Result
}

func newPending(t testing.TB, f *fixture) *pendingRun {
	t.Helper()
	in := f.initiator(t, 1, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, p, err := f.responder(t, fixedNow).HandleInitiation(init, 2)
	if err != nil {
		t.Fatal(err)
	}
	fin, ri, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	return &pendingRun{in: in, p: p, fin: fin, ri: ri}
}

func TestVersionAndSuiteRefused(t *testing.T) {
	f := newFixture(t)
	in := f.initiator(t, 1, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		off  int
		val  byte
		want error
	}{
		{"version 0 (stripped)", 1, 0, ErrVersion},
		{"version 1 (before delegated credentials)", 1, 1, ErrVersion},
		{"version 3", 1, 3, ErrVersion},
		{"version 255", 1, 255, ErrVersion},
		{"kem 0", 8, 0, ErrSuite},
		{"kem 2", 8, 2, ErrSuite},
		{"sig 0 (no signature)", 9, 0, ErrSuite},
		{"sig 2", 9, 2, ErrSuite},
		{"aead 0", 10, 0, ErrSuite},
		{"aead 3", 10, 3, ErrSuite},
		{"flags", 11, 0x80, ErrSuite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(init)
			bad[tc.off] = tc.val
			_, _, err := f.responder(t, fixedNow).HandleInitiation(bad, 2)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if code, ok := CodeFor(err); !ok || code != CodeUnsupportedVersion {
				t.Fatalf("code %v %v", code, ok)
			}
		})
	}
	// The version byte of every other message too.
	resp, p, err := f.responder(t, fixedNow).HandleInitiation(init, 2)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(resp)
	bad[1] = 0
	if _, _, err := in.HandleResponse(bad); !errors.Is(err, ErrVersion) {
		t.Fatalf("response version 0: %v", err)
	}
	fin, _, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	bad = bytes.Clone(fin)
	bad[1] = 1
	if _, err := p.HandleFinish(bad); !errors.Is(err, ErrVersion) {
		t.Fatalf("finish version 1: %v", err)
	}
}

func TestReplayedInitiation(t *testing.T) {
	f := newFixture(t)
	c := &clock{t: testNow}
	r := f.responder(t, c.now)
	in := f.initiator(t, 1, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.HandleInitiation(init, 2); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, time.Second, 5 * time.Second} {
		c.t = testNow.Add(d)
		if _, _, err := r.HandleInitiation(init, 3); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay after %s: %v, want ErrReplay", d, err)
		}
		if _, ok := r.ErrorFor(1, err); ok {
			t.Fatal("a replay must be dropped silently")
		}
	}
	for _, d := range []time.Duration{5*time.Second + 1, 10 * time.Second, 11 * time.Second, time.Hour} {
		c.t = testNow.Add(d)
		_, _, err := r.HandleInitiation(init, 3)
		var ce *ClockSkewError
		if !errors.As(err, &ce) || !errors.Is(err, ErrClockSkew) || !ce.Claimed.Equal(testNow) || !ce.Local.Equal(c.t) {
			t.Fatalf("replay after %s: %v, want ErrClockSkew", d, err)
		}
	}
}

// WireGuard's CVE-2021-46873: an initiator whose clock once ran ahead left
// a "highest timestamp" behind and was locked out. Here nothing is stored
// for a refused Initiation and nothing per initiator at all.
func TestNoClockLockout(t *testing.T) {
	f := newFixture(t)
	r := f.responder(t, fixedNow)
	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	in := f.initiator(t, 5, func() time.Time { return future })
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.HandleInitiation(init, 6)
	var ce *ClockSkewError
	if !errors.As(err, &ce) || !ce.Claimed.Equal(future) || !ce.Local.Equal(testNow) || ce.MaxSkew != 5*time.Second {
		t.Fatalf("year 2100: %v", err)
	}
	msg, ok := r.ErrorFor(5, err)
	if !ok {
		t.Fatal("clock skew gets an answer")
	}
	info, err := in.HandleError(msg)
	if err != nil {
		t.Fatal(err)
	}
	if info.Code != CodeClockSkew || info.Authenticated || !info.ResponderTime.Equal(testNow) {
		t.Fatalf("error info %+v", info)
	}
	if r.replay.n != 0 {
		t.Fatalf("a refused initiation left %d replay entries", r.replay.n)
	}
	// The same agent with its clock corrected is accepted at once.
	in2 := f.initiator(t, 5, fixedNow)
	f.handshake(t, in2, r, 6)
	// And one with a clock in the past.
	past := f.initiator(t, 5, func() time.Time { return testNow.Add(-24 * time.Hour) })
	init, err = past.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.HandleInitiation(init, 6); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("clock a day behind: %v", err)
	}
	f.handshake(t, f.initiator(t, 5, fixedNow), r, 6)
}

func TestReplayedFinish(t *testing.T) {
	f := newFixture(t)
	r := f.responder(t, fixedNow)
	in := f.initiator(t, 1, fixedNow)
	first := f.handshake(t, in, r, 2)
	// The same agent starts again; the responder uses the same local index.
	in2 := f.initiator(t, 1, fixedNow)
	init, err := in2.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, p, err := r.HandleInitiation(init, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.HandleFinish(first.finish); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("replayed finish: %v, want ErrDecrypt", err)
	}
	if _, ok := p.ErrorFor(ErrDecrypt); ok {
		t.Fatal("an undecryptable finish gets no answer")
	}
	fin, _, err := in2.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.HandleFinish(fin); err != nil {
		t.Fatalf("genuine finish after a replayed one: %v", err)
	}
	// A replayed Response is refused by an initiator that moved on.
	in3 := f.initiator(t, 1, fixedNow)
	if _, err := in3.Initiation(nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := in3.HandleResponse(first.resp); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("replayed response: %v", err)
	}
}

func TestFinishPeerRefused(t *testing.T) {
	f := newFixture(t)
	other := newPKI(t, "Other")
	otherChain, _ := other.agent(t, "agent-0001", "agent", testNow.Add(-time.Hour), testNow.Add(time.Hour))
	expired, _ := f.pki.agent(t, "agent-0001", "agent", testNow.Add(-48*time.Hour), testNow.Add(-time.Hour))
	notYet, _ := f.pki.agent(t, "agent-0001", "agent", testNow.Add(time.Hour), testNow.Add(48*time.Hour))
	otherKey, _ := f.pki.agent(t, "agent-0001", "someone else's key", testNow.Add(-time.Hour), testNow.Add(time.Hour))
	revokedChain, revokedSerial := f.pki.agent(t, "agent-0002", "agent", testNow.Add(-time.Hour), testNow.Add(time.Hour))
	f.revoked[revokedSerial.String()] = true
	statusChain, _ := f.pki.agent(t, "agent-0003", "agent", testNow.Add(-time.Hour), testNow.Add(time.Hour))
	leafOnly := [][]byte{f.chain[0]}

	for _, tc := range []struct {
		name   string
		chain  [][]byte
		status error
		want   []error
		code   ErrorCode
	}{
		{"chains to another CA", otherChain, nil, []error{ErrCertificate}, CodeBadCertificate},
		{"expired", expired, nil, []error{ErrCertificate, ErrExpired}, CodeBadCertificate},
		{"not yet valid", notYet, nil, []error{ErrCertificate, ErrExpired}, CodeBadCertificate},
		{"revoked", revokedChain, nil, []error{ErrRevoked}, CodeCertificateRevoked},
		{"status unavailable", statusChain, errors.New("crl fetch failed"), []error{ErrStatusUnavailable}, CodeBusy},
		{"missing intermediate", leafOnly, nil, []error{ErrCertificate}, CodeBadCertificate},
		{"certificate of another key", otherKey, nil, []error{ErrSignature}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.statusErr = tc.status
			defer func() { f.statusErr = nil }()
			in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: tc.chain, ResponderPublicKey: f.gwPub,
				Rand: f.rand, Now: fixedNow, LocalIndex: 1})
			if err != nil {
				t.Fatal(err)
			}
			init, err := in.Initiation(nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, p, err := f.responder(t, fixedNow).HandleInitiation(init, 2)
			if err != nil {
				t.Fatal(err)
			}
			fin, _, err := in.HandleResponse(resp)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.HandleFinish(fin)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Fatalf("%v, want %v", err, w)
				}
			}
			if tc.name == "expired" {
				var ce *pqx509.CertificateInvalidError
				if !errors.As(err, &ce) || ce.Reason != pqx509.Expired {
					t.Fatalf("no pqx509 reason in %v", err)
				}
			}
			if _, err := p.HandleFinish(fin); !errors.Is(err, ErrState) {
				t.Fatalf("finish after a final refusal: %v", err)
			}
			msg, ok := p.ErrorFor(err)
			if tc.code == 0 {
				if ok {
					t.Fatal("a bad signature gets no answer")
				}
				return
			}
			if !ok {
				t.Fatal("no error message")
			}
			info, err := in.HandleError(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !info.Authenticated || info.Code != tc.code {
				t.Fatalf("initiator sees %+v", info)
			}
			// A forged tag is refused.
			msg[len(msg)-1] ^= 1
			if _, err := in.HandleError(msg); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("forged error tag: %v", err)
			}
			p.Zeroize()
			if _, ok := p.ErrorFor(ErrRevoked); ok {
				t.Fatal("error after zeroize")
			}
		})
	}
}

func TestLeafWithoutAgentURIRefused(t *testing.T) {
	f := newFixture(t)
	// A gateway-style certificate (no avon://agent/ URI).
	pk, _ := mldsaKey("agent")
	raw, _ := pk.MarshalBinary()
	der, err := pqx509.CreateCertificate(t.Context(), &pqx509.Template{
		SerialNumber: big.NewInt(900), Subject: f.pki.inter.Subject, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour),
		PublicKey: pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: raw}, DNSNames: []string{"gw.example"},
	}, f.pki.inter, f.pki.interSigner)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.verifier.VerifyChain([][]byte{der, f.pki.interDER}, testNow)
	if !errors.Is(err, ErrCertificate) {
		t.Fatalf("%v", err)
	}
}

func TestWrongResponderSignature(t *testing.T) {
	f := newFixture(t)
	_, rogueSK := mldsaKey("rogue gateway")
	rogue, err := NewMLDSA65Signer(rogueSK, detRand("rogue"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResponder(ResponderConfig{Signer: rogue, Verifier: f.verifier, Rand: f.rand, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	r.cfg.ResponderID = f.gwID // claims the real gateway's id
	in := f.initiator(t, 1, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := r.HandleInitiation(init, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := in.HandleResponse(resp); !errors.Is(err, ErrSignature) {
		t.Fatalf("%v, want ErrSignature", err)
	}
	// The real gateway's answer is still accepted.
	resp, p, err := f.responder(t, fixedNow).HandleInitiation(init, 2)
	if err != nil {
		t.Fatal(err)
	}
	fin, _, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.HandleFinish(fin); err != nil {
		t.Fatal(err)
	}
	// An initiation for another responder_id.
	in2, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: rogue.Public(),
		Rand: f.rand, Now: fixedNow, LocalIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	init, err = in2.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.responder(t, fixedNow).HandleInitiation(init, 2)
	if !errors.Is(err, ErrUnknownResponder) {
		t.Fatalf("%v", err)
	}
	if code, ok := CodeFor(err); !ok || code != CodeUnknownResponder {
		t.Fatal(code, ok)
	}
}

func TestEphemeralKeyRefused(t *testing.T) {
	f := newFixture(t)
	in := f.initiator(t, 1, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	epkOff := InitiationMinLen - 2*MACLen - CredentialHashLen - EphemeralKeyLen
	x := epkOff + x25519Offset
	var cases []struct {
		name string
		mut  func([]byte)
	}
	for i, lo := range lowOrderX25519 {
		for _, hi := range []byte{0, 0x80} {
			cases = append(cases, struct {
				name string
				mut  func([]byte)
			}{fmt.Sprintf("x25519 small order %d high bit %#x", i, hi), func(b []byte) {
				copy(b[x:], lo[:])
				b[x+31] |= hi
			}})
		}
	}
	cases = append(cases, struct {
		name string
		mut  func([]byte)
	}{"ml-kem coefficient >= q", func(b []byte) { b[epkOff] = 0xff; b[epkOff+1] |= 0x0f }},
		struct {
			name string
			mut  func([]byte)
		}{"ml-kem all ones", func(b []byte) {
			for i := epkOff; i < epkOff+1184-32; i++ {
				b[i] = 0xff
			}
		}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(init)
			tc.mut(bad)
			r := f.responder(t, fixedNow)
			if _, _, err := r.HandleInitiation(bad, 2); !errors.Is(err, ErrKey) {
				t.Fatalf("%v, want ErrKey", err)
			}
			if r.replay.n != 0 {
				t.Fatal("a refused key left a replay entry")
			}
		})
	}
	// An all-zero ML-KEM part is a valid (if silly) key: X-Wing still
	// binds the X25519 part, and the transcript refuses the mismatch.
	bad := bytes.Clone(init)
	clear(bad[epkOff : epkOff+1184-32])
	if resp, _, err := f.responder(t, fixedNow).HandleInitiation(bad, 2); err == nil {
		if _, _, err := in.HandleResponse(resp); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("zero ml-kem part: %v", err)
		}
	} else if !errors.Is(err, ErrKey) {
		t.Fatalf("zero ml-kem part: %v", err)
	}
}

func TestRekeyTwice(t *testing.T) {
	for _, aead := range []AEADID{AES256GCM, ChaCha20Poly1305} {
		t.Run(aead.String(), func(t *testing.T) {
			f := newFixture(t)
			in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub,
				AEAD: aead, Rand: f.rand, Now: fixedNow, LocalIndex: 10})
			if err != nil {
				t.Fatal(err)
			}
			h := f.handshake(t, in, f.responder(t, fixedNow), 20)
			ri, rr := h.ri, h.rr
			seen := map[[32]byte]bool{ri.SendKey: true, ri.RecvKey: true, ri.RekeySecret: true}
			for round := range 2 {
				rk, err := NewRekeyInitiator(ri, f.rand, fixedNow, uint32(11+round))
				if err != nil {
					t.Fatal(err)
				}
				msg, err := rk.RekeyInit()
				if err != nil {
					t.Fatal(err)
				}
				if len(msg) != RekeyInitLen {
					t.Fatalf("rekey init of %d bytes", len(msg))
				}
				resp, rr2, err := HandleRekeyInit(rr, msg, f.rand, fixedNow, uint32(21+round))
				if err != nil {
					t.Fatal(err)
				}
				if len(resp) != RekeyRespLen {
					t.Fatalf("rekey resp of %d bytes", len(resp))
				}
				// The replayed RekeyInit is refused.
				if _, _, err := HandleRekeyInit(rr, msg, f.rand, fixedNow, 99); !errors.Is(err, ErrReplay) {
					t.Fatalf("replayed rekey init: %v", err)
				}
				ri2, err := rk.HandleRekeyResp(resp)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := rk.HandleRekeyResp(resp); !errors.Is(err, ErrState) {
					t.Fatalf("second rekey resp: %v", err)
				}
				if ri2.SendKey != rr2.RecvKey || ri2.RecvKey != rr2.SendKey || ri2.RekeySecret != rr2.RekeySecret || ri2.SessionID != rr2.SessionID {
					t.Fatalf("round %d: keys differ", round)
				}
				for _, k := range [][32]byte{ri2.SendKey, ri2.RecvKey, ri2.RekeySecret} {
					if seen[k] {
						t.Fatalf("round %d: a key repeats", round)
					}
					seen[k] = true
				}
				if ri2.LocalIndex != uint32(11+round) || ri2.RemoteIndex != uint32(21+round) || rr2.LocalIndex != uint32(21+round) || rr2.RemoteIndex != uint32(11+round) {
					t.Fatal("indexes")
				}
				if ri2.AEAD != aead || rr2.Peer.ID != "agent-0001" || !ri2.Initiator || rr2.Initiator {
					t.Fatal("session properties not carried over")
				}
				ri.Zeroize()
				rr.Zeroize()
				ri, rr = ri2, rr2
			}
			if _, err := NewRekeyInitiator(rr, f.rand, fixedNow, 1); !errors.Is(err, ErrState) {
				t.Fatalf("responder starting a rekey: %v", err)
			}
		})
	}
}

func TestRekeyRefusals(t *testing.T) {
	f := newFixture(t)
	h := f.handshake(t, f.initiator(t, 1, fixedNow), f.responder(t, fixedNow), 2)
	rk, err := NewRekeyInitiator(h.ri, f.rand, fixedNow, 3)
	if err != nil {
		t.Fatal(err)
	}
	first, err := rk.RekeyInit()
	if err != nil {
		t.Fatal(err)
	}
	second, err := rk.RekeyInit() // retry: counter 2, new key
	if err != nil {
		t.Fatal(err)
	}
	if be.Uint64(first[12:]) != 1 || be.Uint64(second[12:]) != 2 {
		t.Fatal("counters are not 1, 2")
	}
	// Bit flips anywhere are refused before any state changes.
	for i := range second {
		bad := bytes.Clone(second)
		bad[i] ^= 1
		_, _, err := HandleRekeyInit(h.rr, bad, f.rand, fixedNow, 4)
		if err == nil {
			t.Fatalf("rekey init byte %d flipped accepted", i)
		}
	}
	resp, _, err := HandleRekeyInit(h.rr, second, f.rand, fixedNow, 4)
	if err != nil {
		t.Fatal(err)
	}
	// The older counter is refused once a newer one was accepted.
	if _, _, err := HandleRekeyInit(h.rr, first, f.rand, fixedNow, 4); !errors.Is(err, ErrReplay) {
		t.Fatalf("older counter: %v", err)
	}
	// The initiator refuses bit flips of the response, then takes it.
	for i := range resp {
		bad := bytes.Clone(resp)
		bad[i] ^= 1
		if _, err := rk.HandleRekeyResp(bad); err == nil {
			t.Fatalf("rekey resp byte %d flipped accepted", i)
		}
	}
	if _, err := rk.HandleRekeyResp(resp); err != nil {
		t.Fatal(err)
	}
	// The next RekeyInitiator of the same session continues the counter.
	rk2, err := NewRekeyInitiator(h.ri, f.rand, fixedNow, 5)
	if err != nil {
		t.Fatal(err)
	}
	third, err := rk2.RekeyInit()
	if err != nil {
		t.Fatal(err)
	}
	if be.Uint64(third[12:]) != 3 {
		t.Fatalf("counter %d after 2", be.Uint64(third[12:]))
	}
	// A zeroized session cannot rekey.
	h.rr.Zeroize()
	if _, _, err := HandleRekeyInit(h.rr, third, f.rand, fixedNow, 6); !errors.Is(err, ErrState) {
		t.Fatalf("rekey of zeroized session: %v", err)
	}
}

func TestReplayCacheBusyAndExpiry(t *testing.T) {
	f := newFixture(t)
	c := &clock{t: testNow}
	r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Verifier: f.verifier, Rand: f.rand, Now: c.now,
		MaxSkew: 5 * time.Second, ReplayCacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ini := func() []byte {
		in := f.initiator(t, 1, c.now)
		b, err := in.Initiation(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for range 2 {
		if _, _, err := r.HandleInitiation(ini(), 2); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = r.HandleInitiation(ini(), 2)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("full cache: %v, want ErrBusy", err)
	}
	if code, ok := CodeFor(err); !ok || code != CodeBusy {
		t.Fatal("busy gets code busy")
	}
	c.t = testNow.Add(10 * time.Second) // 2*MaxSkew later the entries expire
	for range 2 {
		if _, _, err := r.HandleInitiation(ini(), 2); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
	}
}

func TestFailClosedRandomness(t *testing.T) {
	f := newFixture(t)
	in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub,
		Rand: failingReader{}, Now: fixedNow, LocalIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Initiation(nil); !errors.Is(err, ErrRandom) {
		t.Fatalf("initiation: %v", err)
	}
	r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Verifier: f.verifier, Rand: failingReader{}, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	init, err := f.initiator(t, 1, fixedNow).Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.HandleInitiation(init, 2); !errors.Is(err, ErrRandom) {
		t.Fatalf("responder: %v", err)
	}
	_, sk := mldsaKey("x")
	s, err := NewMLDSA65Signer(sk, failingReader{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign([]byte("m"), nil); !errors.Is(err, ErrRandom) {
		t.Fatalf("signer: %v", err)
	}
	s.Close()
	if _, err := s.Sign([]byte("m"), nil); !errors.Is(err, ErrSigner) {
		t.Fatalf("closed signer: %v", err)
	}
}

func TestConfigRefused(t *testing.T) {
	f := newFixture(t)
	good := InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub, Rand: f.rand, Now: fixedNow}
	for _, tc := range []struct {
		name string
		mut  func(*InitiatorConfig)
	}{
		{"no signer", func(c *InitiatorConfig) { c.Signer = nil }},
		{"no rand", func(c *InitiatorConfig) { c.Rand = nil }},
		{"no clock", func(c *InitiatorConfig) { c.Now = nil }},
		{"bad aead", func(c *InitiatorConfig) { c.AEAD = 9 }},
		{"short gateway key", func(c *InitiatorConfig) { c.ResponderPublicKey = c.ResponderPublicKey[:100] }},
		{"id of another key", func(c *InitiatorConfig) { c.ResponderID = [IDLen]byte{1} }},
		{"no chain", func(c *InitiatorConfig) { c.Chain = nil }},
		{"chain not DER", func(c *InitiatorConfig) { c.Chain = [][]byte{[]byte("not a certificate")} }},
		{"chain too long", func(c *InitiatorConfig) { c.Chain = [][]byte{c.Chain[0], c.Chain[1], c.Chain[1]} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mut(&c)
			if _, err := NewInitiator(c); !errors.Is(err, ErrConfig) {
				t.Fatalf("%v", err)
			}
		})
	}
	if _, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Verifier: f.verifier, Rand: f.rand, Now: fixedNow, ResponderID: [IDLen]byte{1}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("responder id of another key: %v", err)
	}
	if _, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Rand: f.rand, Now: fixedNow}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no verifier: %v", err)
	}
	if _, err := NewChainVerifier(nil, ChainVerifierOptions{}); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	id, err := ResponderIDFromCertificate(f.pki.rootDER)
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := ResponderID(f.pki.root.PublicKey.Raw)
	if id != id2 {
		t.Fatal("responder id from certificate and from key differ")
	}
}

func TestHandshakeErrorMessages(t *testing.T) {
	f := newFixture(t)
	r := f.responder(t, fixedNow)
	in := f.initiator(t, 42, fixedNow)
	msg := r.ErrorMessage(42, CodeNotAuthorized, string(bytes.Repeat([]byte("é"), 200)))
	info, err := in.HandleError(msg)
	if err != nil {
		t.Fatal(err)
	}
	if info.Code != CodeNotAuthorized || info.Authenticated || len(info.Detail) != MaxErrorDetail {
		t.Fatalf("%+v (%d detail bytes)", info, len(info.Detail))
	}
	if _, err := f.initiator(t, 43, fixedNow).HandleError(msg); !errors.Is(err, ErrIndex) {
		t.Fatalf("wrong index: %v", err)
	}
	// An authenticated error before any verified Response cannot be checked.
	m, _ := ParseHandshakeError(msg)
	m.Authenticated = true
	forged, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.HandleError(forged); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("authenticated error before the response: %v", err)
	}
	for _, tc := range []struct {
		err  error
		code ErrorCode
		ok   bool
	}{
		{&ClockSkewError{}, CodeClockSkew, true},
		{fmt.Errorf("x: %w", ErrVersion), CodeUnsupportedVersion, true},
		{ErrRevoked, CodeCertificateRevoked, true},
		{fmt.Errorf("%w: %w", ErrCertificate, ErrExpired), CodeBadCertificate, true},
		{ErrBusy, CodeBusy, true},
		{ErrMalformed, 0, false},
		{ErrReplay, 0, false},
		{ErrSignature, 0, false},
		{ErrDecrypt, 0, false},
		{nil, 0, false},
	} {
		if code, ok := CodeFor(tc.err); code != tc.code || ok != tc.ok {
			t.Errorf("CodeFor(%v) = %v %v", tc.err, code, ok)
		}
	}
	if CodeBusy.String() != "busy" || ErrorCode(99).Known() {
		t.Fatal("code names")
	}
}

// The low-order table is exactly what X25519 maps to zero, checked against
// golang.org/x/crypto/curve25519 (which refuses an all-zero output).
func TestLowOrderTable(t *testing.T) {
	rnd := detRand("low order")
	scalar := make([]byte, 32)
	for i, u := range lowOrderX25519 {
		for _, hi := range []byte{0, 0x80} {
			p := u
			p[31] |= hi
			if _, err := rnd.Read(scalar); err != nil {
				t.Fatal(err)
			}
			if _, err := x25519(scalar, p[:]); err == nil {
				t.Fatalf("entry %d (high %#x) is not of small order", i, hi)
			}
			if !lowOrderX25519Point(p[:]) {
				t.Fatalf("entry %d (high %#x) not caught", i, hi)
			}
		}
	}
	// Differential: random points near the table and random points agree.
	pt := make([]byte, 32)
	for i := range 2000 {
		if _, err := rnd.Read(pt); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // a neighbour of an entry
			e := lowOrderX25519[i%len(lowOrderX25519)]
			copy(pt, e[:])
			pt[i%32] ^= byte(1 << (i % 8))
		}
		_, err := x25519(scalar, pt)
		if (err != nil) != lowOrderX25519Point(pt) {
			t.Fatalf("%x: x25519 %v, table %v", pt, err, lowOrderX25519Point(pt))
		}
	}
}

// lockedReader makes a deterministic reader safe for concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// One Responder serves concurrent handshakes (run with -race); each
// PendingHandshake takes exactly one Finish even when raced.
func TestResponderConcurrent(t *testing.T) {
	f := newFixture(t)
	f.rand = &lockedReader{r: detRand("concurrent")}
	r := f.responder(t, fixedNow)
	type prepared struct {
		in   *Initiator
		init []byte
	}
	const n = 6
	var ps [n]prepared
	for i := range ps {
		ps[i].in = f.initiator(t, uint32(100+i), fixedNow)
		var err error
		if ps[i].init, err = ps[i].in.Initiation(nil); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, p, err := r.HandleInitiation(ps[i].init, uint32(200+i))
			if err != nil {
				errs <- err
				return
			}
			fin, ri, err := ps[i].in.HandleResponse(resp)
			if err != nil {
				errs <- err
				return
			}
			var inner sync.WaitGroup
			results := make(chan *Result, 2)
			for range 2 {
				inner.Add(1)
				go func() {
					defer inner.Done()
					res, err := p.HandleFinish(fin)
					if err == nil {
						results <- res
					} else if !errors.Is(err, ErrState) {
						errs <- err
					}
				}()
			}
			inner.Wait()
			close(results)
			count := 0
			for res := range results {
				count++
				if res.RecvKey != ri.SendKey {
					errs <- errors.New("keys differ")
				}
			}
			if count != 1 {
				errs <- fmt.Errorf("%d successful finishes", count)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if r.replay.n != n {
		t.Fatalf("replay cache holds %d nonces, want %d", r.replay.n, n)
	}
}

// TestChainVerifierKnownIntermediates: a leaf sent alone verifies when the
// verifier knows the intermediate, and not otherwise.
func TestChainVerifierKnownIntermediates(t *testing.T) {
	p := newPKI(t, "known-inter")
	now := testNow
	chain, _ := p.agent(t, "agent-leaf-only", "leaf-only", now.Add(-time.Hour), now.Add(time.Hour))
	bare, err := NewChainVerifier([][]byte{p.rootDER}, ChainVerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.VerifyChain(chain[:1], now); !errors.Is(err, ErrCertificate) {
		t.Fatalf("leaf alone without known intermediates: %v", err)
	}
	v, err := NewChainVerifier([][]byte{p.rootDER}, ChainVerifierOptions{Intermediates: [][]byte{p.interDER}})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string][][]byte{"leaf alone": chain[:1], "full chain": chain} {
		if peer, err := v.VerifyChain(c, now); err != nil || peer.ID != "agent-leaf-only" {
			t.Errorf("%s: %v %q", name, err, peer.ID)
		}
	}
	if _, err := NewChainVerifier([][]byte{p.rootDER}, ChainVerifierOptions{Intermediates: [][]byte{{1, 2, 3}}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("garbage intermediate: %v", err)
	}
}
