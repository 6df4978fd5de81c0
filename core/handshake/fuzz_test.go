package handshake

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Fuzz targets: every parser of untrusted bytes and every handler that
// takes them. Parsers must never panic, must return a known sentinel on
// refusal, and must re-marshal what they accept to the same bytes.

var (
	fuzzOnce sync.Once
	fuzzF    *fixture
	fuzzRun  *run
	fuzzRk   []byte // a RekeyInit for fuzzRun.rr
	fuzzRkR  []byte // a RekeyResp
)

func fuzzFixture(t testing.TB) *fixture {
	fuzzOnce.Do(func() {
		fuzzF = newFixture(t)
		fuzzRun = fuzzF.handshake(t, fuzzF.initiator(t, 1, fixedNow), fuzzF.responder(t, fixedNow), 2)
		rk, err := NewRekeyInitiator(fuzzRun.ri, fuzzF.rand, fixedNow, 3)
		if err != nil {
			t.Fatal(err)
		}
		if fuzzRk, err = rk.RekeyInit(); err != nil {
			t.Fatal(err)
		}
		// Answer on a copy, so fuzzRun.rr keeps accepting counter 1.
		cp := *fuzzRun.rr
		cp.rekey = &rekeyState{}
		if fuzzRkR, _, err = HandleRekeyInit(&cp, fuzzRk, fuzzF.rand, fixedNow, 4); err != nil {
			t.Fatal(err)
		}
	})
	return fuzzF
}

// vectorMessages are the messages of testdata/vectors.json: seeds for the
// parser targets without any cryptography at start-up (a fuzz worker runs
// its setup under coverage instrumentation, where key generation is slow).
func vectorMessages(t testing.TB) map[string][]byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for k, h := range v.Messages {
		if out[k], err = hex.DecodeString(h); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

var sentinels = []error{ErrTruncated, ErrMalformed, ErrVersion, ErrSuite, ErrUnknownResponder, ErrClockSkew, ErrReplay,
	ErrBusy, ErrKey, ErrIndex, ErrDecrypt, ErrSignature, ErrCertificate, ErrRevoked, ErrStatusUnavailable, ErrNotAuthorized, ErrState, ErrRandom, ErrSigner, ErrCredential}

func checkTyped(t *testing.T, err error) {
	t.Helper()
	if err != nil && !isAny(err, sentinels) {
		t.Fatalf("untyped error: %v", err)
	}
}

func FuzzParseInitiation(f *testing.F) {
	v := vectorMessages(f)
	f.Add(v["initiation"])
	m, _ := ParseInitiation(v["initiation"])
	m.Token = bytes.Repeat([]byte{7}, MaxTokenLen)
	withToken, _ := m.Marshal()
	f.Add(withToken)
	f.Add([]byte{1, Version, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseInitiation(b)
		checkTyped(t, err)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	v := vectorMessages(f)
	f.Add(v["response"])
	f.Add(v["response"][:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseResponse(b)
		checkTyped(t, err)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseFinish(f *testing.F) {
	v := vectorMessages(f)
	f.Add(v["finish"])
	f.Add(v["finish"][:FinishMinLen])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseFinish(b)
		checkTyped(t, err)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseHandshakeError(f *testing.F) {
	v := vectorMessages(f)
	f.Add(v["handshake_error"])
	f.Add(buildError(1, CodeBusy, []byte("busy"), nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseHandshakeError(b)
		checkTyped(t, err)
		if err != nil {
			return
		}
		if m.Code&errAuthenticated != 0 {
			t.Fatal("flag bit left in the code")
		}
		out, err := m.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzParseRekey parses the bytes as RekeyInit and as RekeyResp.
func FuzzParseRekey(f *testing.F) {
	v := vectorMessages(f)
	f.Add(v["rekey_init"])
	f.Add(v["rekey_resp"])
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, typ := range []MessageType{TypeRekeyInit, TypeRekeyResp} {
			m, err := ParseRekey(b, typ)
			checkTyped(t, err)
			if err == nil {
				out, err := m.Marshal()
				if err != nil || !bytes.Equal(out, b) {
					t.Fatalf("round trip: %v", err)
				}
			}
		}
	})
}

// FuzzHandleRekeyInit feeds the bytes to the responder's rekey handler of
// a live session.
func FuzzHandleRekeyInit(f *testing.F) {
	fx := fuzzFixture(f)
	f.Add(fuzzRk)
	f.Add(fuzzRkR)
	f.Fuzz(func(t *testing.T, b []byte) {
		// On a copy of the session so an accepted counter does not stick.
		cp := *fuzzRun.rr
		cp.rekey = &rekeyState{}
		resp, res, err := HandleRekeyInit(&cp, b, fx.rand, fixedNow, 9)
		checkTyped(t, err)
		if err == nil && (len(resp) != RekeyRespLen || res == nil) {
			t.Fatal("accepted rekey without a response")
		}
	})
}

// FuzzResponderHandleInitiation feeds arbitrary bytes to a fresh responder
// (so the replay cache does not mask later checks), building the Response
// in a new buffer or, for odd lengths, in a reused one (HandleInitiationTo).
func FuzzResponderHandleInitiation(f *testing.F) {
	fx := fuzzFixture(f)
	f.Add(fuzzRun.init)
	bad := bytes.Clone(fuzzRun.init)
	copy(bad[len(bad)-2*MACLen-CredentialHashLen-32:], lowOrderX25519[2][:])
	f.Add(bad)
	dirty := make([]byte, ResponseFullLen)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := fx.responder(t, fixedNow)
		var resp []byte
		var p *PendingHandshake
		var err error
		if len(b)%2 == 0 {
			resp, p, err = r.HandleInitiation(b, 2)
		} else {
			// In a reused buffer holding other bytes.
			for i := range dirty {
				dirty[i] = 0xa5
			}
			resp, p, err = r.HandleInitiationTo(dirty[:0], b, 2)
		}
		checkTyped(t, err)
		if err != nil {
			if resp != nil || p != nil {
				t.Fatal("refusal with output")
			}
			if msg, ok := r.ErrorFor(1, err); ok {
				if _, err := ParseHandshakeError(msg); err != nil {
					t.Fatalf("error message does not parse: %v", err)
				}
			}
			return
		}
		if len(resp) != ResponseLen || p == nil {
			t.Fatal("bad response")
		}
	})
}

// FuzzPendingHandleFinish fuzzes the Finish two ways: raw bytes (first
// byte 0), and, past the AEAD, the plaintext (first byte 1): sealed by the
// test under the pending handshake's key so the chain parser, the verifier
// and the signature check see arbitrary input.
func FuzzPendingHandleFinish(f *testing.F) {
	fx := fuzzFixture(f)
	tmpl := newPending(f, fx)
	plain, err := open(&tmpl.p.ki, tmpl.fin[8:], tmpl.p.th3[:])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte{0}, tmpl.fin...))
	f.Add(append([]byte{1}, plain...))
	f.Add(append([]byte{1}, plain[:2+100]...))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		p := &PendingHandshake{r: tmpl.p.r, localIndex: tmpl.p.localIndex, remoteIndex: tmpl.p.remoteIndex,
			aead: tmpl.p.aead, created: tmpl.p.created, prk: tmpl.p.prk, th3: tmpl.p.th3, ki: tmpl.p.ki, errKey: tmpl.p.errKey}
		msg := b[1:]
		if b[0]&1 == 1 {
			sealed, err := seal(nil, &p.ki, msg, p.th3[:])
			if err != nil {
				t.Fatal(err)
			}
			msg = append([]byte{byte(TypeFinish), Version, 0, 0, 0, 0, 0, 2}, sealed...)
			if len(msg) > FinishMaxLen || len(msg) < FinishMinLen {
				return
			}
		}
		orig := bytes.Clone(msg)
		res, err := p.HandleFinish(msg)
		checkTyped(t, err)
		if !bytes.Equal(msg, orig) {
			t.Fatal("HandleFinish modified the message")
		}
		if err == nil {
			if res.Peer.ID != "agent-0001" {
				t.Fatalf("accepted peer %q", res.Peer.ID)
			}
			return
		}
		if errors.Is(err, ErrCertificate) || errors.Is(err, ErrSignature) || errors.Is(err, ErrMalformed) {
			if _, err2 := p.HandleFinish(msg); !errors.Is(err2, ErrState) && b[0]&1 == 1 {
				t.Fatalf("refusal after decryption is not final: %v", err2)
			}
		}
	})
}

func FuzzParseCredential(f *testing.F) {
	v := vectorMessages(f)
	f.Add(v["credential"])
	f.Add(v["credential"][:52])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCredential(b)
		checkTyped(t, err)
		if err != nil {
			if !errors.Is(err, ErrCredential) {
				t.Fatalf("not ErrCredential: %v", err)
			}
			return
		}
		if !bytes.Equal(c.Raw, b) || c.verified || c.NotAfter.Sub(c.NotBefore) > MaxCredentialValidity || !c.NotAfter.After(c.NotBefore) {
			t.Fatal("accepted credential does not match its bytes")
		}
		if c.verify(fuzzPinned(t), [IDLen]byte(b[20:52])) == nil && !bytes.Equal(b, v["credential"]) {
			t.Fatal("a changed credential verified")
		}
	})
}

var fuzzPinnedKey = sync.OnceValue(func() []byte {
	pk, _ := mldsaKey("gateway")
	b, _ := pk.MarshalBinary()
	return b
})

func fuzzPinned(t *testing.T) *mldsa65.PublicKey {
	pk, err := parseMLDSA65(fuzzPinnedKey())
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// FuzzInitiatorResponsePlaintext feeds the initiator's check of enc_r's
// plaintext (flags, credential, sig_r) arbitrary bytes, with and without a
// cached credential.
func FuzzInitiatorResponsePlaintext(f *testing.F) {
	v := vectorMessages(f)
	cred, err := VerifyCredential(v["credential"], fuzzPinnedKey(), testNow, 0)
	if err != nil {
		f.Fatal(err)
	}
	sig := bytes.Repeat([]byte{3}, SignatureLen)
	f.Add(false, append(append(make([]byte, NonceLen), 0, 0, 0, 3), append(bytes.Clone(v["credential"]), sig...)...))
	f.Add(true, append(append(make([]byte, NonceLen), 0, 0, 0, 1), sig...))
	f.Add(true, append(make([]byte, NonceLen), 0, 0, 0, 0))
	fx := fuzzFixture(f)
	f.Fuzz(func(t *testing.T, cached bool, pt []byte) {
		c := (*Credential)(nil)
		if cached {
			c = cred
		}
		in := fx.initiatorWith(t, 1, fixedNow, c)
		got, _, err := in.verifyResponder(th0, pt)
		checkTyped(t, err)
		if err == nil {
			t.Fatalf("a random sig_r verified (credential %v)", got != nil)
		}
	})
}
