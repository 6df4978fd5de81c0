package policytest

import (
	"errors"
	"os"
	"testing"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
)

// FuzzParse: any test file parses or fails with ErrInvalidFile; a parsed
// one runs against the example set without a panic.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/corp_test.json")
	if err != nil {
		f.Fatal(err)
	}
	text, err := os.ReadFile("testdata/corp.cedar")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"tests":[{"principal":"Agent::\"a\"","action":"reach","resource":"Network::\"n\"","expect":"deny","context":{"x":null}}]}`))
	f.Add([]byte(`{"entities":[{"uid":"Agent::\"\\u0000\"","parents":["Group::\"g\""]}],"tests":[]}`))
	src := abac.Source{ID: "corp", Policies: string(text)}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidFile) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(file.Cases) > 64 {
			return
		}
		rep, _, err := file.RunSource(src)
		if err == nil && rep.Passed+rep.Failed != len(file.Cases) {
			t.Fatalf("%d results for %d cases", rep.Passed+rep.Failed, len(file.Cases))
		}
	})
}
