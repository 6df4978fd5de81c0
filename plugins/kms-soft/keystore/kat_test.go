package keystore

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/avonzt/avon/internal/mldsahedge"
	"github.com/avonzt/avon/internal/testvec"
	"github.com/avonzt/avon/sdk/kms"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMLKEMKeyGenFromSeed: the stored 64-byte seed (d || z) derives the
// Wycheproof public keys.
func TestMLKEMKeyGenFromSeed(t *testing.T) {
	raw, err := os.ReadFile(testvec.Path(t, "wycheproof/mlkem_768_keygen_seed_test.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		TestGroups []struct {
			Tests []struct {
				TcID   int    `json:"tcId"`
				Seed   string `json:"seed"`
				EK     string `json:"ek"`
				Result string `json:"result"`
			} `json:"tests"`
		} `json:"testGroups"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range f.TestGroups {
		for _, tc := range g.Tests {
			if tc.Result != "valid" {
				continue
			}
			m, err := parse(kms.MLKEM768, unhex(t, tc.Seed))
			if err != nil {
				t.Fatalf("tc %d: %v", tc.TcID, err)
			}
			if !bytes.Equal(m.public, unhex(t, tc.EK)) {
				t.Fatalf("tc %d: public key differs from the vector", tc.TcID)
			}
			n++
		}
	}
	if n < 50 {
		t.Fatalf("only %d vectors checked", n)
	}
}

// TestMLDSAFromSeedAndVerify: the stored 32-byte seed derives the Wycheproof
// public keys, and the keystore's verifier agrees with every vector.
func TestMLDSAFromSeedAndVerify(t *testing.T) {
	raw, err := os.ReadFile(testvec.Path(t, "wycheproof/mldsa_65_sign_seed_test.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		TestGroups []struct {
			PrivateSeed string `json:"privateSeed"`
			PublicKey   string `json:"publicKey"`
			Tests       []struct {
				TcID   int      `json:"tcId"`
				Msg    string   `json:"msg"`
				Ctx    string   `json:"ctx"`
				Sig    string   `json:"sig"`
				Result string   `json:"result"`
				Flags  []string `json:"flags"`
			} `json:"tests"`
		} `json:"testGroups"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	keys, valid, invalid := 0, 0, 0
	for _, g := range f.TestGroups {
		if len(g.PrivateSeed) != 64 {
			continue
		}
		m, err := parse(kms.MLDSA65, unhex(t, g.PrivateSeed))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.public, unhex(t, g.PublicKey)) {
			t.Fatalf("seed %s…: public key differs from the vector", g.PrivateSeed[:16])
		}
		keys++
		for _, tc := range g.Tests {
			// "Internal" vectors give an external mu instead of the message:
			// they test Sign_internal/Verify_internal, which the KMS does not expose.
			if tc.Sig == "" || slices.Contains(tc.Flags, "Internal") {
				continue
			}
			ok := m.verify(unhex(t, tc.Msg), unhex(t, tc.Ctx), unhex(t, tc.Sig))
			switch {
			case tc.Result == "valid" && !ok:
				t.Errorf("tc %d: valid signature rejected", tc.TcID)
			case tc.Result == "invalid" && ok:
				t.Errorf("tc %d: invalid signature accepted", tc.TcID)
			case tc.Result == "valid":
				valid++
			default:
				invalid++
			}
		}
	}
	if keys < 10 || valid < 10 {
		t.Fatalf("checked only %d keys, %d valid and %d invalid signatures", keys, valid, invalid)
	}
}

// fixedReader returns the same bytes on every read: the "host RNG" of a
// known-answer test.
type fixedReader []byte

func (f fixedReader) Read(p []byte) (int, error) {
	if len(p) != len(f) {
		return 0, errors.New("fixedReader: unexpected read size")
	}
	return copy(p, f), nil
}

// TestMLDSAHedgedSigningKAT: signing through the keystore's hedged path
// reproduces Wycheproof's signatures byte for byte, the deterministic ones
// with rnd = 0^32 and the randomized one with its rnd, both read from the
// reader the keystore is given. This pins the go:linkname into circl
// (internal/mldsahedge) and proves the FIPS 204 rnd comes from Options.Rand.
func TestMLDSAHedgedSigningKAT(t *testing.T) {
	raw, err := os.ReadFile(testvec.Path(t, "wycheproof/mldsa_65_sign_seed_test.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		TestGroups []struct {
			PrivateSeed string `json:"privateSeed"`
			Tests       []struct {
				TcID   int      `json:"tcId"`
				Msg    string   `json:"msg"`
				Ctx    string   `json:"ctx"`
				Rnd    string   `json:"rnd"`
				Sig    string   `json:"sig"`
				Result string   `json:"result"`
				Flags  []string `json:"flags"`
			} `json:"tests"`
		} `json:"testGroups"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	det, randomized := 0, 0
	for _, g := range f.TestGroups {
		if len(g.PrivateSeed) != 64 {
			continue
		}
		m, err := parse(kms.MLDSA65, unhex(t, g.PrivateSeed))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range g.Tests {
			if tc.Result != "valid" || tc.Sig == "" || slices.Contains(tc.Flags, "Internal") {
				continue
			}
			rnd := make(fixedReader, 32)
			if tc.Rnd != "" {
				rnd = unhex(t, tc.Rnd)
				randomized++
			} else {
				det++
			}
			sig, err := m.sign(rnd, unhex(t, tc.Msg), unhex(t, tc.Ctx))
			if err != nil {
				t.Fatalf("tc %d: %v", tc.TcID, err)
			}
			if !bytes.Equal(sig, unhex(t, tc.Sig)) {
				t.Errorf("tc %d (%s): signature differs from the vector", tc.TcID, tc.Flags)
			}
		}
	}
	if det < 50 || randomized < 1 {
		t.Fatalf("checked %d deterministic and %d randomized vectors", det, randomized)
	}
}

// The one-time self-test of the linked Sign_internal passes for all three
// parameter sets.
func TestHedgedSelfTest(t *testing.T) {
	if err := mldsahedge.Ready(); err != nil {
		t.Fatal(err)
	}
}
