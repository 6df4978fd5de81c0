package handshake

import (
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// forgeResponse answers init as a responder would, but with whatever flags,
// credential bytes (nil: none sent), credential hash (bound in thc) and
// signer the test chooses: the tool for every refusal the initiator must
// make.
func forgeResponse(t *testing.T, init []byte, flags uint32, credRaw []byte, hash [CredentialHashLen]byte, s Signer) []byte {
	t.Helper()
	m, err := ParseInitiation(init)
	if err != nil {
		t.Fatal(err)
	}
	epk, err := parseEphemeral(m.EphemeralKey)
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, CiphertextLen)
	ss, err := encapsulateTo(ct, epk, detRand("forge"))
	if err != nil {
		t.Fatal(err)
	}
	th1 := transcript(th0, init[:len(init)-2*MACLen])
	prk := extract(th1[:], ss[:])
	out := make([]byte, 12+CiphertextLen+responseSealedLen+len(credRaw))
	putHeader(out, TypeResponse)
	be.PutUint32(out[4:], 9)
	be.PutUint32(out[8:], m.SenderIndex)
	copy(out[12:], ct)
	th2 := transcript(th1, out[:12+CiphertextLen])
	f4 := be.AppendUint32(nil, flags)
	thc := transcript(th2, f4, hash[:])
	sig, err := s.Sign(thc[:], []byte(contextResponder))
	if err != nil {
		t.Fatal(err)
	}
	plain := append(append(append(make([]byte, NonceLen), f4...), credRaw...), sig...)
	kr := expand32(&prk, labelResponder, th2[:])
	enc, err := seal(nil, &kr, plain, th2[:])
	if err != nil {
		t.Fatal(err)
	}
	copy(out[12+CiphertextLen:], enc)
	return out
}

// resignCredential re-signs a credential body with s as the pinned key.
func resignCredential(t *testing.T, raw []byte, s Signer) []byte {
	t.Helper()
	out := bytes.Clone(raw)
	sig, err := s.Sign(out[:credentialBodyLen], []byte(labelCredential))
	if err != nil {
		t.Fatal(err)
	}
	copy(out[credentialBodyLen:], sig)
	return out
}

func otherSigner(t *testing.T, label string) *MLDSA65Signer {
	t.Helper()
	_, sk := mldsaKey(label)
	s, err := NewMLDSA65Signer(sk, detRand(label+" signing"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDelegatedHandshake(t *testing.T) {
	f := newFixture(t)
	r, d := f.delegatedResponder(t, fixedNow)
	// First contact: no credential, the Response carries it.
	run1 := f.handshake(t, f.initiator(t, 1, fixedNow), r, 2)
	if len(run1.resp) != ResponseFullLen {
		t.Fatalf("first response of %d bytes, want %d", len(run1.resp), ResponseFullLen)
	}
	c := run1.ri.Credential
	if c == nil || c.Hash != d.Current().Hash || !bytes.Equal(c.PublicKey, d.Current().PublicKey) {
		t.Fatal("initiator did not return the gateway's credential")
	}
	if run1.ri.SendKey != run1.rr.RecvKey || run1.ri.RecvKey != run1.rr.SendKey || run1.rr.Credential != nil {
		t.Fatal("keys differ")
	}
	// With the credential kept: the Response leaves it out.
	run2 := f.handshake(t, f.initiatorWith(t, 3, fixedNow, c), r, 4)
	if len(run2.resp) != ResponseLen {
		t.Fatalf("cached response of %d bytes, want %d", len(run2.resp), ResponseLen)
	}
	if run2.ri.Credential != c || run2.ri.SendKey != run2.rr.RecvKey {
		t.Fatal("cached handshake")
	}
	// The gateway rotated: the old hint does not match, the new credential comes in full.
	d.Install(f.delegated(t, testNow.Add(-time.Minute), time.Hour))
	run3 := f.handshake(t, f.initiatorWith(t, 5, fixedNow, c), r, 6)
	if len(run3.resp) != ResponseFullLen || run3.ri.Credential.Hash != d.Current().Hash || run3.ri.Credential.Hash == c.Hash {
		t.Fatalf("after rotation: response of %d bytes", len(run3.resp))
	}
	// Delegation off: the pinned key signs, no credential.
	run4 := f.handshake(t, f.initiatorWith(t, 7, fixedNow, c), f.responder(t, fixedNow), 8)
	if len(run4.resp) != ResponseLen || run4.ri.Credential != nil {
		t.Fatal("pinned-key handshake")
	}
}

func TestCredentialHintUnlinkable(t *testing.T) {
	f := newFixture(t)
	r, _ := f.delegatedResponder(t, fixedNow)
	c := f.handshake(t, f.initiator(t, 1, fixedNow), r, 2).ri.Credential
	in := f.initiatorWith(t, 3, fixedNow, c)
	a, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	ma, _ := ParseInitiation(a)
	mb, _ := ParseInitiation(b)
	if ma.CredentialHint == mb.CredentialHint || bytes.Contains(a, c.Hash[:]) {
		t.Fatal("the hint repeats or shows the credential hash")
	}
}

func TestCredentialRefused(t *testing.T) {
	f := newFixture(t)
	good := f.delegated(t, testNow.Add(-time.Hour), 8*time.Hour)
	other := otherSigner(t, "other gateway")
	otherID, _ := ResponderID(other.Public())
	expired := f.delegated(t, testNow.Add(-9*time.Hour), 8*time.Hour)
	future := f.delegated(t, testNow.Add(time.Hour), 8*time.Hour)
	swapped := f.delegated(t, testNow.Add(-time.Hour), 4*time.Hour) // another delegated key of the same gateway
	byOther := resignCredential(t, good.cred.Raw, other)
	otherID2 := bytes.Clone(good.cred.Raw)
	copy(otherID2[20:52], otherID[:])
	otherID2 = resignCredential(t, otherID2, other)
	tooLong := bytes.Clone(good.cred.Raw)
	be.PutUint64(tooLong[12:], uint64(testNow.Add(24*time.Hour+time.Second).UnixNano()))
	tooLong = resignCredential(t, tooLong, f.gwSigner)

	type tc struct {
		name  string
		flags uint32
		cred  []byte
		hash  [CredentialHashLen]byte
		sign  Signer
		want  []error
	}
	cases := []tc{
		{"expired credential", 3, expired.cred.Raw, expired.cred.Hash, expired.s, []error{ErrCredential, ErrExpired}},
		{"not yet valid credential", 3, future.cred.Raw, future.cred.Hash, future.s, []error{ErrCredential, ErrExpired}},
		{"credential signed by another key", 3, byOther, sha256Of(byOther), good.s, []error{ErrCredential}},
		{"credential of another responder", 3, otherID2, sha256Of(otherID2), good.s, []error{ErrCredential}},
		{"validity over 24 h", 3, tooLong, sha256Of(tooLong), good.s, []error{ErrCredential, ErrMalformed}},
		{"delegated key swapped", 3, good.cred.Raw, good.cred.Hash, swapped.s, []error{ErrSignature}},
		{"hash in thc is not the credential's", 3, good.cred.Raw, swapped.cred.Hash, good.s, []error{ErrSignature}},
		{"pinned flag but delegated signature", 0, nil, [32]byte{}, good.s, []error{ErrSignature}},
		{"delegated flag but pinned signature", 3, good.cred.Raw, good.cred.Hash, f.gwSigner, []error{ErrSignature}},
		{"omitted credential the initiator lacks", 1, nil, good.cred.Hash, good.s, []error{ErrCredential}},
		{"credential flag without delegation", 2, good.cred.Raw, good.cred.Hash, good.s, []error{ErrMalformed}},
		{"credential sent with the omitted flag", 1, good.cred.Raw, good.cred.Hash, good.s, []error{ErrMalformed}},
		{"credential flag without a credential", 3, nil, good.cred.Hash, good.s, []error{ErrMalformed}},
		{"unknown flag", 0x83, good.cred.Raw, good.cred.Hash, good.s, []error{ErrMalformed}},
	}
	// A bit flip in each field of the credential, not re-signed.
	for _, fl := range []struct {
		name string
		off  int
		want error
	}{{"sig alg", 0, ErrSuite}, {"issuer alg", 1, ErrSuite}, {"reserved", 2, ErrMalformed}, {"not_before", 4 + 7, ErrCredential},
		{"not_after", 12 + 6, ErrCredential}, {"responder_id", 20 + 5, ErrCredential}, {"public key", 52 + 100, ErrCredential},
		{"signature", credentialBodyLen + 10, ErrCredential}} {
		bad := bytes.Clone(good.cred.Raw)
		bad[fl.off] ^= 0x01
		cases = append(cases, tc{"bit flip in " + fl.name, 3, bad, sha256Of(bad), good.s, []error{ErrCredential, fl.want}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := f.initiator(t, 1, fixedNow)
			init, err := in.Initiation(nil)
			if err != nil {
				t.Fatal(err)
			}
			resp := forgeResponse(t, init, c.flags, c.cred, c.hash, c.sign)
			fin, res, err := in.HandleResponse(resp)
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Fatalf("%v, want %v", err, w)
				}
			}
			if fin != nil || res != nil {
				t.Fatal("refusal with output")
			}
			// Nothing changed: the real gateway's answer still completes.
			r, _ := f.delegatedResponder(t, fixedNow)
			real, p, err := r.HandleInitiation(init, 2)
			if err != nil {
				t.Fatal(err)
			}
			fin, _, err = in.HandleResponse(real)
			if err != nil {
				t.Fatalf("real response after a refused one: %v", err)
			}
			if _, err := p.HandleFinish(fin); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The forging helper itself makes acceptable Responses.
	in := f.initiator(t, 1, fixedNow)
	init, _ := in.Initiation(nil)
	if _, _, err := in.HandleResponse(forgeResponse(t, init, 3, good.cred.Raw, good.cred.Hash, good.s)); err != nil {
		t.Fatalf("well-formed forged response refused: %v", err)
	}
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

// TestCachedCredentialMismatch: the agent's cached credential is not the
// one the Response's signature binds (a gateway answering "omitted" for a
// credential it does not hold, or a forger): refused.
func TestCachedCredentialMismatch(t *testing.T) {
	f := newFixture(t)
	a := f.delegated(t, testNow.Add(-time.Hour), 8*time.Hour)
	b := f.delegated(t, testNow.Add(-time.Hour), 2*time.Hour)
	ca, err := VerifyCredential(a.cred.Raw, f.gwPub, testNow, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := f.initiatorWith(t, 1, fixedNow, ca)
	init, _ := in.Initiation(nil)
	for name, resp := range map[string][]byte{
		"other key, other hash": forgeResponse(t, init, 1, nil, b.cred.Hash, b.s),
		"other key, our hash":   forgeResponse(t, init, 1, nil, a.cred.Hash, b.s),
		"our key, other hash":   forgeResponse(t, init, 1, nil, b.cred.Hash, a.s),
	} {
		if _, _, err := in.HandleResponse(resp); !errors.Is(err, ErrSignature) {
			t.Fatalf("%s: %v, want ErrSignature", name, err)
		}
	}
	if _, res, err := in.HandleResponse(forgeResponse(t, init, 1, nil, a.cred.Hash, a.s)); err != nil || res.Credential != ca {
		t.Fatalf("matching omitted credential: %v", err)
	}
}

func TestCachedCredentialExpired(t *testing.T) {
	f := newFixture(t)
	r, _ := f.delegatedResponder(t, fixedNow)
	c := f.handshake(t, f.initiator(t, 1, fixedNow), r, 2).ri.Credential
	// Past the credential's end (+ skew) the agent does not hint at it and
	// refuses a Response that leaves it out.
	late := func() time.Time { return c.NotAfter.Add(DefaultMaxSkew + time.Second) }
	in := f.initiatorWith(t, 3, late, c)
	init, _ := in.Initiation(nil)
	r2, d2 := f.delegatedResponder(t, late)
	d2.Install(f.delegated(t, late().Add(-time.Minute), time.Hour))
	resp, _, err := r2.HandleInitiation(init, 4)
	if err != nil || len(resp) != ResponseFullLen {
		t.Fatalf("stale hint answered with %d bytes: %v", len(resp), err)
	}
	cOld := forgeResponse(t, init, 1, nil, c.Hash, otherSigner(t, "x"))
	if _, _, err := in.HandleResponse(cOld); !errors.Is(err, ErrExpired) {
		t.Fatalf("%v, want ErrExpired", err)
	}
}

func TestResponderDelegatedKeyMissing(t *testing.T) {
	f := newFixture(t)
	r, d := f.delegatedResponder(t, fixedNow)
	in := f.initiator(t, 1, fixedNow)
	init, _ := in.Initiation(nil)
	d.Close()
	if resp, p, err := r.HandleInitiation(init, 2); !errors.Is(err, ErrSigner) || resp != nil || p != nil {
		t.Fatalf("no delegated key: %v", err)
	}
	d.Install(f.delegated(t, testNow.Add(-3*time.Hour), time.Hour)) // expired at the responder
	init, _ = in.Initiation(nil)
	if _, _, err := r.HandleInitiation(init, 2); !errors.Is(err, ErrSigner) || !errors.Is(err, ErrExpired) {
		t.Fatalf("expired delegated key: %v", err)
	}
}

func TestDelegatedKeyRetiredAfterInFlight(t *testing.T) {
	f := newFixture(t)
	d := &DelegatedKeys{}
	old := f.delegated(t, testNow, time.Hour)
	d.Install(old)
	k := d.acquire() // a handshake signing with the old key
	if k != old {
		t.Fatal("acquire")
	}
	done := make(chan struct{})
	go func() {
		d.Install(f.delegated(t, testNow, 2*time.Hour))
		close(done)
	}()
	deadline := time.After(10 * time.Second)
	for d.Current() == old.cred {
		select {
		case <-deadline:
			t.Fatal("the new key was not installed")
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := k.s.Sign([]byte("in flight"), nil); err != nil {
		t.Fatalf("the old key was cleared while a handshake used it: %v", err)
	}
	select {
	case <-done:
		t.Fatal("Install returned while the old key was in use")
	default:
	}
	k.mu.RUnlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Install did not return")
	}
	if old.s != nil {
		t.Fatal("the replaced key was not cleared")
	}
}

func TestIssueCredential(t *testing.T) {
	f := newFixture(t)
	for _, v := range []time.Duration{-time.Second, MaxCredentialValidity + time.Second} {
		if _, err := IssueCredential(f.gwSigner, detRand("x"), testNow, v); !errors.Is(err, ErrConfig) {
			t.Fatalf("validity %s: %v", v, err)
		}
	}
	if _, err := IssueCredential(f.gwSigner, failingReader{}, testNow, 0); !errors.Is(err, ErrRandom) {
		t.Fatal(err)
	}
	// A KMS that signs with a key other than the one it claims.
	liar := &lyingSigner{pub: f.gwPub, s: otherSigner(t, "liar")}
	if _, err := IssueCredential(liar, detRand("x"), testNow, 0); !errors.Is(err, ErrSigner) || !errors.Is(err, ErrCredential) {
		t.Fatalf("lying signer: %v", err)
	}
	k, err := IssueCredential(f.gwSigner, detRand("x"), testNow, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.cred.NotAfter.Sub(k.cred.NotBefore); got != DefaultCredentialValidity {
		t.Fatalf("default validity %s", got)
	}
	if _, err := VerifyCredential(k.cred.Raw, f.gwPub, testNow.Add(DefaultCredentialValidity), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCredential(k.cred.Raw, f.gwPub, testNow.Add(DefaultCredentialValidity+time.Second), 0); !errors.Is(err, ErrExpired) {
		t.Fatal(err)
	}
	if _, err := VerifyCredential(k.cred.Raw[:100], f.gwPub, testNow, 0); !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrCredential) {
		t.Fatal(err)
	}
	if _, err := VerifyCredential(append(bytes.Clone(k.cred.Raw), 0), f.gwPub, testNow, 0); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
}

type lyingSigner struct {
	pub []byte
	s   Signer
}

func (l *lyingSigner) Public() []byte                       { return l.pub }
func (l *lyingSigner) Sign(msg, ctx []byte) ([]byte, error) { return l.s.Sign(msg, ctx) }

// TestDelegatedConcurrentRotation: handshakes on four goroutines while the
// delegated key is replaced; every one completes with the key it started
// with (run with -race).
func TestDelegatedConcurrentRotation(t *testing.T) {
	f := newFixture(t)
	d := &DelegatedKeys{}
	d.Install(f.delegated(t, testNow.Add(-time.Hour), 8*time.Hour))
	r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Verifier: f.verifier, Rand: crand.Reader, Now: fixedNow,
		MaxSkew: 5 * time.Second, ReplayCacheSize: 1024, Delegated: d})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*5)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub,
					Rand: detRand(fmt.Sprintf("concurrent %d %d", g, i)), Now: fixedNow, LocalIndex: uint32(g*10 + i)})
				if err != nil {
					errs <- err
					return
				}
				init, err := in.Initiation(nil)
				if err != nil {
					errs <- err
					return
				}
				resp, p, err := r.HandleInitiation(init, uint32(100+g*10+i))
				if err != nil {
					errs <- err
					return
				}
				fin, _, err := in.HandleResponse(resp)
				if err != nil {
					errs <- err
					return
				}
				if _, err := p.HandleFinish(fin); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 3 {
		d.Install(f.delegated(t, testNow.Add(-time.Duration(i+2)*time.Minute), time.Hour))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
