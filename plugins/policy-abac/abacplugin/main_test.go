package abacplugin

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when a decision log goroutine outlives the
// tests: every test Closes the plugins it configures.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := noLogLoop(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func noLogLoop(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !strings.Contains(string(buf[:n]), "abacplugin.(*Plugin).logLoop") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked decision log goroutine:\n%s", buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
