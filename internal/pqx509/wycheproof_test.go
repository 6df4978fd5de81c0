package pqx509

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/avonzt/avon/internal/sigverify"
	"github.com/avonzt/avon/internal/testvec"
)

type wpFile struct {
	Algorithm  string `json:"algorithm"`
	TestGroups []struct {
		PublicKey    string `json:"publicKey"`
		PublicKeyDer string `json:"publicKeyDer"`
		Tests        []struct {
			TcID   int     `json:"tcId"`
			Msg    string  `json:"msg"`
			Ctx    *string `json:"ctx"`
			Sig    string  `json:"sig"`
			Result string  `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Wycheproof ML-DSA verify vectors through our verification path: the
// group's SPKI through ParseSPKI, the signature through DefaultVerifier
// (empty context) or, for vectors with a context, through sigverify.
func TestWycheproofMLDSA(t *testing.T) {
	for _, alg := range []string{MLDSA44, MLDSA65, MLDSA87} {
		t.Run(alg, func(t *testing.T) {
			name := map[string]string{MLDSA44: "44", MLDSA65: "65", MLDSA87: "87"}[alg]
			raw, err := os.ReadFile(testvec.Path(t, "wycheproof/mldsa_"+name+"_verify_test.json"))
			if err != nil {
				t.Fatal(err)
			}
			var f wpFile
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			var plain, withCtx, valid, badKeys int
			for _, g := range f.TestGroups {
				pub := unhex(t, g.PublicKey)
				k, err := ParseSPKI(unhex(t, g.PublicKeyDer))
				switch {
				case len(pub) == keyAlgs[alg].keyLen:
					if err != nil || !k.Equal(PublicKey{Algorithm: alg, Raw: pub}) {
						t.Fatalf("SPKI of a %d-byte key: %v", len(pub), err)
					}
				case !errors.Is(err, ErrBadKey):
					t.Fatalf("SPKI of a %d-byte key accepted or wrong error: %v", len(pub), err)
				default:
					badKeys++
				}
				for _, tc := range g.Tests {
					msg, sig := unhex(t, tc.Msg), unhex(t, tc.Sig)
					var err error
					if tc.Ctx != nil && *tc.Ctx != "" {
						withCtx++
						err = sigverify.Verify(alg, pub, msg, unhex(t, *tc.Ctx), sig)
					} else {
						plain++
						err = DefaultVerifier.Verify(alg, pub, msg, sig)
					}
					switch tc.Result {
					case "valid":
						valid++
						if err != nil {
							t.Errorf("tc %d: valid signature refused: %v", tc.TcID, err)
						}
					case "invalid":
						if err == nil {
							t.Errorf("tc %d: invalid signature accepted", tc.TcID)
						}
					default:
						t.Fatalf("tc %d: result %q", tc.TcID, tc.Result)
					}
				}
			}
			if plain == 0 {
				t.Fatal("no vectors")
			}
			t.Logf("%s: %d vectors without context through DefaultVerifier, %d with a context through sigverify, %d valid; %d groups with a bad key length refused by ParseSPKI",
				alg, plain, withCtx, valid, badKeys)
		})
	}
}
