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
	_, file, _, _ := runtime.Caller(0)
	// internal/testvec/testvec.go -> repository root -> ../shared/testdata
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	return filepath.Join(filepath.Dir(root), "shared", "testdata")
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
