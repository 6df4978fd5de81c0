// Package testvec locates the shared test vectors (../shared/testdata beside
// the checkout, or $AVON_TESTDATA) for tests. A missing file skips the test
// with the file's name, unless AVON_REQUIRE_TESTDATA=1 (CI), where it fails.
// It is for tests only and must not be imported by production code.
package testvec

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir returns the test vector directory.
func Dir() string {
	if d := os.Getenv("AVON_TESTDATA"); d != "" {
		return d
	}
	return filepath.Join(filepath.Dir(repoRoot()), "shared", "testdata")
}

// repoRoot finds the checkout: from this file's path when it is absolute
// (a normal build), else by walking up from the working directory to go.mod
// (builds with -trimpath).
func repoRoot() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		// internal/testvec/testvec.go -> repository root
		return filepath.Dir(filepath.Dir(filepath.Dir(file)))
	}
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// Path returns the path of a vector file relative to Dir, skipping or
// failing the test when it is absent.
func Path(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(Dir(), rel)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("AVON_REQUIRE_TESTDATA") == "1" {
			t.Fatalf("test vector %s required (AVON_REQUIRE_TESTDATA=1) but absent: %v", p, err)
		}
		t.Skipf("test vector %s absent (set AVON_TESTDATA or place ../shared/testdata): %v", p, err)
	}
	return p
}
