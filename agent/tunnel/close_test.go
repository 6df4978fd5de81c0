package tunnel

import (
	"errors"
	"testing"

	"github.com/avonzt/avon/core/tunnel/control"
)

// TestCloseError: a connect denial reads "connect denied: <reason>
// (policy <ids>)" in the status; other Closes keep their code.
func TestCloseError(t *testing.T) {
	err := closeError(&control.Close{Code: control.CloseConnectDenied, Reason: "device quarantined (policy quarantine)"})
	if !errors.Is(err, ErrConnectDenied) || errors.Is(err, ErrClosed) || err.Error() != "connect denied: device quarantined (policy quarantine)" {
		t.Fatalf("connect denial: %v", err)
	}
	err = closeError(&control.Close{Code: control.CloseKilled, Reason: "operator said so"})
	if !errors.Is(err, ErrClosed) || errors.Is(err, ErrConnectDenied) || err.Error() != "the gateway closed the session: code 5: operator said so" {
		t.Fatalf("close: %v", err)
	}
}
