//go:build ignore

// gen extracts acvp.json.gz, a small subset of the NIST ACVP SLH-DSA
// vectors (FIPS 205, external interface, pure mode) that circl ships in
// sign/slhdsa/testdata, for the provider's known-answer tests:
//
//	go run ./examples/pqc-slhdsa/slhdsa/testdata/gen.go
//
// Key generation: the first two cases of every parameter set. Signature
// generation: per parameter set, deterministic and hedged, the case with the
// shortest message, the expected signature kept as its SHA-256. Signature
// verification (whole signatures, so only the 128-bit sets, whose
// signatures are the smallest): the two shortest passing and two shortest
// failing cases of each "s" set, one of each of each "f" set.
package main

import (
	"cmp"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

type (
	keyGen struct {
		TcID         int    `json:"tcId"`
		ParameterSet string `json:"parameterSet"`
		SkSeed       string `json:"skSeed"`
		SkPrf        string `json:"skPrf"`
		PkSeed       string `json:"pkSeed"`
		Sk           string `json:"sk"`
		Pk           string `json:"pk"`
	}
	sigGen struct {
		TcID                 int    `json:"tcId"`
		ParameterSet         string `json:"parameterSet"`
		Deterministic        bool   `json:"deterministic"`
		Sk                   string `json:"sk"`
		Message              string `json:"message"`
		Context              string `json:"context"`
		AdditionalRandomness string `json:"additionalRandomness,omitempty"`
		SignatureSHA256      string `json:"signatureSHA256"`
	}
	verify struct {
		TcID         int    `json:"tcId"`
		ParameterSet string `json:"parameterSet"`
		Pk           string `json:"pk"`
		Message      string `json:"message"`
		Context      string `json:"context"`
		Signature    string `json:"signature"`
		TestPassed   bool   `json:"testPassed"`
	}
	subset struct {
		Source string   `json:"source"`
		KeyGen []keyGen `json:"keyGen"`
		SigGen []sigGen `json:"sigGen"`
		Verify []verify `json:"verify"`
	}
)

type group struct {
	TgID          int              `json:"tgId"`
	ParameterSet  string           `json:"parameterSet"`
	Interface     string           `json:"signatureInterface"`
	PreHash       string           `json:"preHash"`
	Deterministic bool             `json:"deterministic"`
	Tests         []map[string]any `json:"tests"`
}

type file struct {
	TestGroups []group `json:"testGroups"`
}

func read(dir, name string) file {
	f, err := os.Open(filepath.Join(dir, "sign/slhdsa/testdata", name))
	must(err)
	defer f.Close()
	z, err := gzip.NewReader(f)
	must(err)
	var out file
	must(json.NewDecoder(z).Decode(&out))
	return out
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func s(m map[string]any, k string) string { v, _ := m[k].(string); return v }

func tc(m map[string]any) int { return int(m["tcId"].(float64)) }

// results indexes a results file by tcId.
func results(f file) map[int]map[string]any {
	out := map[int]map[string]any{}
	for _, g := range f.TestGroups {
		for _, t := range g.Tests {
			out[tc(t)] = t
		}
	}
	return out
}

func main() {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "github.com/cloudflare/circl").Output()
	must(err)
	dir, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	sub := subset{Source: "NIST ACVP-Server SLH-DSA FIPS 205 sample vectors, as shipped in github.com/cloudflare/circl@" + version + " sign/slhdsa/testdata (extracted by gen.go)"}

	kp, kr := read(dir, "keyGen_prompt.json.gz"), results(read(dir, "keyGen_results.json.gz"))
	for _, g := range kp.TestGroups {
		for _, t := range g.Tests[:2] {
			r := kr[tc(t)]
			sub.KeyGen = append(sub.KeyGen, keyGen{tc(t), g.ParameterSet, s(t, "skSeed"), s(t, "skPrf"), s(t, "pkSeed"), s(r, "sk"), s(r, "pk")})
		}
	}

	sp, sr := read(dir, "sigGen_prompt.json.gz"), results(read(dir, "sigGen_results.json.gz"))
	for _, g := range sp.TestGroups {
		if g.Interface != "external" || g.PreHash != "pure" {
			continue
		}
		t := slices.MinFunc(g.Tests, func(a, b map[string]any) int { return cmp.Compare(len(s(a, "message")), len(s(b, "message"))) })
		sig, err := hex.DecodeString(s(sr[tc(t)], "signature"))
		must(err)
		sum := sha256.Sum256(sig)
		sub.SigGen = append(sub.SigGen, sigGen{tc(t), g.ParameterSet, g.Deterministic, s(t, "sk"), s(t, "message"), s(t, "context"),
			s(t, "additionalRandomness"), hex.EncodeToString(sum[:])})
	}

	vp, vr := read(dir, "verify_prompt.json.gz"), results(read(dir, "verify_results.json.gz"))
	for _, g := range vp.TestGroups {
		if g.Interface != "external" || g.PreHash != "pure" {
			continue
		}
		per := 0
		switch {
		case strings.HasSuffix(g.ParameterSet, "-128s"):
			per = 2
		case strings.HasSuffix(g.ParameterSet, "-128f"):
			per = 1
		}
		tests := slices.SortedFunc(slices.Values(g.Tests), func(a, b map[string]any) int { return cmp.Compare(len(s(a, "message")), len(s(b, "message"))) })
		for _, want := range []bool{true, false} {
			n := 0
			for _, t := range tests {
				passed := vr[tc(t)]["testPassed"].(bool)
				if passed != want || n == per {
					continue
				}
				n++
				sub.Verify = append(sub.Verify, verify{tc(t), g.ParameterSet, s(t, "pk"), s(t, "message"), s(t, "context"), s(t, "signature"), passed})
			}
		}
	}

	f, err := os.Create(filepath.Join("examples/pqc-slhdsa/slhdsa/testdata", "acvp.json.gz"))
	must(err)
	z, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	enc := json.NewEncoder(z)
	enc.SetIndent("", " ")
	must(enc.Encode(sub))
	must(z.Close())
	must(f.Close())
	fmt.Printf("keyGen %d, sigGen %d, verify %d\n", len(sub.KeyGen), len(sub.SigGen), len(sub.Verify))
}
