package rng

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/avonzt/avon/internal/testvec"
)

type acvpFile struct {
	Algorithm  string      `json:"algorithm"`
	TestGroups []acvpGroup `json:"testGroups"`
}

type acvpGroup struct {
	TgID            int        `json:"tgId"`
	Mode            string     `json:"mode"`
	DerFunc         bool       `json:"derFunc"`
	ReSeed          bool       `json:"reSeed"`
	PredResistance  bool       `json:"predResistance"`
	ReturnedBitsLen int        `json:"returnedBitsLen"`
	Tests           []acvpCase `json:"tests"`
}

type acvpCase struct {
	TcID         int         `json:"tcId"`
	EntropyInput hexBytes    `json:"entropyInput"`
	Nonce        hexBytes    `json:"nonce"`
	PersoString  hexBytes    `json:"persoString"`
	OtherInput   []acvpOther `json:"otherInput"`
	ReturnedBits hexBytes    `json:"returnedBits"`
}

type acvpOther struct {
	IntendedUse     string   `json:"intendedUse"`
	AdditionalInput hexBytes `json:"additionalInput"`
	EntropyInput    hexBytes `json:"entropyInput"`
}

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

func loadACVP(t *testing.T) acvpFile {
	t.Helper()
	p := testvec.Path(t, "acvp/ctrDRBG-1.0.internalProjection.json.gz")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var file acvpFile
	if err := json.NewDecoder(zr).Decode(&file); err != nil {
		t.Fatalf("decode %s: %v", p, err)
	}
	return file
}

// TestACVP runs every AES-256 group of the NIST ACVP ctrDRBG vectors.
//
// ACVP semantics: the DRBG is instantiated with entropyInput, nonce and
// persoString, then each otherInput entry is applied in order. "reSeed"
// entries reseed with their entropyInput and additionalInput. "generate"
// entries produce returnedBitsLen bits; with predResistance=true the
// entry's entropyInput and additionalInput first reseed the DRBG and the
// generate itself takes no additional input (SP 800-90A §9.3.1), with
// predResistance=false the additional input goes to Generate. returnedBits
// is the output of the last generate.
func TestACVP(t *testing.T) {
	file := loadACVP(t)
	if file.Algorithm != "ctrDRBG" {
		t.Fatalf("algorithm %q, want ctrDRBG", file.Algorithm)
	}
	type variant struct{ df, pr bool }
	seen := map[variant]int{}
	groups, cases := 0, 0
	for _, g := range file.TestGroups {
		if g.Mode != "AES-256" {
			continue
		}
		groups++
		seen[variant{g.DerFunc, g.PredResistance}]++
		if len(g.Tests) == 0 {
			t.Errorf("group %d has no tests", g.TgID)
		}
		for _, tc := range g.Tests {
			cases++
			d := NewCTRDRBG(g.DerFunc)
			if err := d.Instantiate(tc.EntropyInput, tc.Nonce, tc.PersoString); err != nil {
				t.Fatalf("group %d case %d: instantiate: %v", g.TgID, tc.TcID, err)
			}
			out := make([]byte, g.ReturnedBitsLen/8)
			for i, o := range tc.OtherInput {
				var err error
				switch o.IntendedUse {
				case "reSeed":
					err = d.Reseed(o.EntropyInput, o.AdditionalInput)
				case "generate":
					if g.PredResistance {
						if err = d.Reseed(o.EntropyInput, o.AdditionalInput); err == nil {
							err = d.Generate(out, nil)
						}
					} else {
						err = d.Generate(out, o.AdditionalInput)
					}
				default:
					t.Fatalf("group %d case %d: unknown intendedUse %q", g.TgID, tc.TcID, o.IntendedUse)
				}
				if err != nil {
					t.Fatalf("group %d case %d step %d (%s): %v", g.TgID, tc.TcID, i, o.IntendedUse, err)
				}
			}
			if !bytes.Equal(out, tc.ReturnedBits) {
				t.Errorf("group %d (df=%v pr=%v) case %d: returnedBits mismatch\n got %x\nwant %x",
					g.TgID, g.DerFunc, g.PredResistance, tc.TcID, out, tc.ReturnedBits)
			}
			d.Uninstantiate()
		}
	}
	if groups == 0 {
		t.Fatal("no AES-256 groups in the vector file")
	}
	for _, v := range []variant{{true, true}, {true, false}, {false, true}, {false, false}} {
		if seen[v] == 0 {
			t.Errorf("no AES-256 group with derFunc=%v predResistance=%v", v.df, v.pr)
		}
	}
	t.Logf("ACVP ctrDRBG AES-256: %d groups, %d cases", groups, cases)
}
