package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoCoreImports fails if any package under sdk/ (tests included)
// depends on the core or on the module's internal packages: the SDK must be
// able to become its own module.
func TestNoCoreImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}", "github.com/avonzt/avon/sdk/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, p := range strings.Fields(string(out)) {
		checked++
		for _, bad := range []string{"github.com/avonzt/avon/core", "github.com/avonzt/avon/internal", "github.com/avonzt/avon/plugins"} {
			if p == bad || strings.HasPrefix(p, bad+"/") {
				t.Errorf("sdk depends on %s", p)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("go list returned only %d packages; the check saw nothing", checked)
	}
}

// TestExampleUsesOnlySDK holds the third-party example to the same rule.
func TestExampleUsesOnlySDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}", "github.com/avonzt/avon/examples/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/avonzt/avon/") && !strings.HasPrefix(p, "github.com/avonzt/avon/sdk") && !strings.HasPrefix(p, "github.com/avonzt/avon/examples") {
			t.Errorf("examples depend on %s", p)
		}
	}
}
