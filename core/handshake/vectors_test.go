package handshake

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vectorFile is testdata/vectors.json: one deterministic run of protocol v1
// (fixed seeds, fixed calibrated time), every message and every
// intermediate value of the key schedule, in hex.
type vectorFile struct {
	Description string            `json:"description"`
	Inputs      map[string]string `json:"inputs"`
	Messages    map[string]string `json:"messages"`
	Handshake   map[string]string `json:"handshake"`
	Rekey       map[string]string `json:"rekey"`
}

func h(b []byte) string { return hex.EncodeToString(b) }

// makeVectors runs the handshake and a rekey from fixed seeds and
// recomputes the key schedule from the messages alone, as a second
// implementation, checking it against what the state machines derived.
func makeVectors(t *testing.T) *vectorFile {
	t.Helper()
	f := newFixture(t)
	f.rand = detRand("vectors")
	const iIdx, rIdx, iIdx2, rIdx2 = 0x0a0b0c0d, 0x01020304, 0x0a0b0c0e, 0x01020305
	in := f.initiator(t, iIdx, fixedNow)
	r, _ := f.delegatedResponder(t, fixedNow)
	init, err := in.Initiation([]byte("address-token"))
	if err != nil {
		t.Fatal(err)
	}
	eph := &ephemeral{seed: in.eph.seed} // keep a copy of the seed to recompute
	resp, p, err := r.HandleInitiation(init, rIdx)
	if err != nil {
		t.Fatal(err)
	}
	fin, ri, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	errKey := p.errKey
	rr, err := p.HandleFinish(fin)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := NewRekeyInitiator(ri, f.rand, fixedNow, iIdx2)
	if err != nil {
		t.Fatal(err)
	}
	rkInit, err := rk.RekeyInit()
	if err != nil {
		t.Fatal(err)
	}
	rkSeed := rk.eph.seed
	rkResp, rr2, err := HandleRekeyInit(rr, rkInit, f.rand, fixedNow, rIdx2)
	if err != nil {
		t.Fatal(err)
	}
	ri2, err := rk.HandleRekeyResp(rkResp)
	if err != nil {
		t.Fatal(err)
	}
	hsErr := buildError(iIdx, CodeBadCertificate, []byte("example"), &errKey)
	// A second handshake by an agent that kept the credential: the
	// Response leaves it out.
	in2 := f.initiatorWith(t, iIdx, fixedNow, ri.Credential)
	init2, err := in2.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp2, _, err := r.HandleInitiation(init2, rIdx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ri3, err := in2.HandleResponse(resp2); err != nil || len(resp2) != ResponseLen || ri3.Credential.Hash != ri.Credential.Hash {
		t.Fatalf("cached credential: %v, response of %d bytes", err, len(resp2))
	}

	// Recompute from the messages and the initiator's ephemeral seed.
	eph2, err := newEphemeral(bytes.NewReader(eph.seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	th0 := sha256.Sum256([]byte("avon-v1 tunnel handshake"))
	th1 := sha256.Sum256(append(th0[:], init[:len(init)-32]...))
	ss := eph2.decapsulate(resp[12 : 12+1120])
	prk := extract(th1[:], ss[:])
	th2 := sha256.Sum256(append(th1[:], resp[:12+1120]...))
	kr := expand32(&prk, "avon-v1 responder key", th2[:])
	encR := resp[12+1120:]
	plainR, err := open(&kr, encR, th2[:])
	if err != nil {
		t.Fatal(err)
	}
	flags := plainR[32:36]
	cred := plainR[36 : 36+CredentialLen]
	credHash := sha256.Sum256(cred)
	hintH := sha256.New()
	hintH.Write([]byte("avon-v1 credential hint"))
	hintH.Write(init2[20:52]) // nonce_i of the second initiation
	hintH.Write(credHash[:])
	if hint := hintH.Sum(nil); !bytes.Equal(hint, init2[len(init2)-64:len(init2)-32]) {
		t.Fatal("the second initiation's credential hint differs from its recomputation")
	}
	thc := sha256.Sum256(append(append(th2[:], flags...), credHash[:]...))
	th3 := sha256.Sum256(append(thc[:], encR...))
	ki := expand32(&prk, "avon-v1 initiator key", th3[:])
	encI := fin[8:]
	th4 := sha256.Sum256(append(th3[:], encI...))
	i2r := expand32(&prk, "avon-v1 i2r", th4[:])
	r2i := expand32(&prk, "avon-v1 r2i", th4[:])
	rkey := expand32(&prk, "avon-v1 rekey", th4[:])
	var sid [16]byte
	expand(&prk, "avon-v1 session id", th4[:], sid[:])
	ek := expand32(&prk, "avon-v1 error", nil)
	if ri.SendKey != i2r || rr.RecvKey != i2r || ri.RecvKey != r2i || rr.SendKey != r2i || ri.RekeySecret != rkey || ri.SessionID != sid || ek != errKey {
		t.Fatal("the state machines' keys differ from the key schedule recomputed from the messages")
	}
	// Rekey.
	rkEph2, _ := newEphemeral(bytes.NewReader(rkSeed[:]))
	kInit := expand32(&rkey, "avon-v1 rekey init", nil)
	kResp := expand32(&rkey, "avon-v1 rekey resp", nil)
	a, _ := NewAEAD(AES256GCM, kResp[:])
	n1 := counterNonce(1)
	ct, err := a.Open(nil, n1[:], rkResp[20:], rkResp[:20])
	if err != nil {
		t.Fatal(err)
	}
	ss2 := rkEph2.decapsulate(ct)
	prk2 := extract(rkey[:], ss2[:])
	th := sha256.Sum256(append(append(rkey[:], rkInit...), rkResp...))
	i2r2 := expand32(&prk2, "avon-v1 i2r", th[:])
	r2i2 := expand32(&prk2, "avon-v1 r2i", th[:])
	rk2 := expand32(&prk2, "avon-v1 rekey", th[:])
	var sid2 [16]byte
	expand(&prk2, "avon-v1 session id", th[:], sid2[:])
	if ri2.SendKey != i2r2 || rr2.RecvKey != i2r2 || ri2.RecvKey != r2i2 || ri2.RekeySecret != rk2 || rr2.SessionID != sid2 {
		t.Fatal("rekey keys differ from the recomputation")
	}

	ephSeed := eph.seed
	return &vectorFile{
		Description: "AVON tunnel protocol v2 test vectors, generated by `go test ./core/handshake -run TestVectors -update`. " +
			"Keys: ML-DSA-65 from seed SHA-256(\"avon handshake test key: \" || label) with labels agent, gateway, " +
			"\"AVON Test root\", \"AVON Test intermediate\". Randomness: ChaCha8 (math/rand/v2) keyed with SHA-256(\"avon handshake test: \" || label). " +
			"Calibrated time 2026-03-01T12:00:00Z. AEAD AES-256-GCM. The initiation's mac1/mac2 are zero (filled by core/tunnel/cookie). " +
			"The gateway signs with a delegated key (seed and hedging from ChaCha8 keyed with SHA-256(\"avon handshake test: delegated key \" || not_before || validity)), " +
			"credential valid 2026-03-01T11:00:00Z for 8h; response carries it, response_cached (answering initiation_cached, whose hint names it) does not.",
		Inputs: map[string]string{
			"now_unix_ns":               h(be.AppendUint64(nil, uint64(testNow.UnixNano()))),
			"root_certificate":          h(f.pki.rootDER),
			"intermediate_certificate":  h(f.pki.interDER),
			"agent_certificate":         h(f.chain[0]),
			"agent_public_key":          h(f.agentSigner.Public()),
			"gateway_public_key":        h(f.gwPub),
			"responder_id":              h(f.gwID[:]),
			"initiator_index":           h(be.AppendUint32(nil, iIdx)),
			"responder_index":           h(be.AppendUint32(nil, rIdx)),
			"initiator_ephemeral_seed":  h(ephSeed[:]),
			"rekey_ephemeral_seed":      h(rkSeed[:]),
			"rekey_initiator_new_index": h(be.AppendUint32(nil, iIdx2)),
			"rekey_responder_new_index": h(be.AppendUint32(nil, rIdx2)),
		},
		Messages: map[string]string{
			"initiation":        h(init),
			"response":          h(resp),
			"finish":            h(fin),
			"rekey_init":        h(rkInit),
			"rekey_resp":        h(rkResp),
			"handshake_error":   h(hsErr),
			"credential":        h(cred),
			"initiation_cached": h(init2),
			"response_cached":   h(resp2),
		},
		Handshake: map[string]string{
			"th0": h(th0[:]), "th1": h(th1[:]), "ss": h(ss[:]), "prk": h(prk[:]), "th2": h(th2[:]), "k_r": h(kr[:]),
			"flags": h(flags), "credential_hash": h(credHash[:]), "thc": h(thc[:]),
			"th3": h(th3[:]), "k_i": h(ki[:]), "th4": h(th4[:]), "t_i2r": h(i2r[:]), "t_r2i": h(r2i[:]),
			"rk": h(rkey[:]), "sid": h(sid[:]), "k_error": h(ek[:]),
		},
		Rekey: map[string]string{
			"k_rekey_init": h(kInit[:]), "k_rekey_resp": h(kResp[:]), "ss": h(ss2[:]), "prk": h(prk2[:]), "th": h(th[:]),
			"t_i2r": h(i2r2[:]), "t_r2i": h(r2i2[:]), "rk": h(rk2[:]), "sid": h(sid2[:]),
		},
	}
}

// TestVectors regenerates the vectors and compares them byte for byte with
// testdata/vectors.json (rewritten with -update).
func TestVectors(t *testing.T) {
	v := makeVectors(t)
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the handshake no longer reproduces testdata/vectors.json: the wire format or key schedule changed (regenerate with -update only for a deliberate protocol change, and update docs/protocol.md)")
	}
	// The stored messages parse.
	var stored vectorFile
	if err := json.Unmarshal(want, &stored); err != nil {
		t.Fatal(err)
	}
	init, _ := hex.DecodeString(stored.Messages["initiation"])
	if _, err := ParseInitiation(init); err != nil {
		t.Fatal(err)
	}
}
