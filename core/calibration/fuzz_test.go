package calibration_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
)

// FuzzParseAttestation: no input panics; every refusal is a *FormatError;
// every accepted input re-encodes to exactly the same bytes and passes
// VerifyAttestation's structural checks.
func FuzzParseAttestation(f *testing.F) {
	fx := newFixture(f, calibration.Config{})
	fx.calibrate(f)
	_, b := attest(f, fx, "agent:seed", []byte("nonce"))
	f.Add(b)
	f.Add(validEncoded().bytes())
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 1, 'A', 1, 'k', 0, 0})
	f.Add(append(validEncoded().bytes(), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := calibration.ParseAttestation(b)
		if err != nil {
			var fe *calibration.FormatError
			if !errors.As(err, &fe) || !errors.Is(err, calibration.ErrMalformed) || a != nil {
				t.Fatalf("untyped refusal %v (%T)", err, err)
			}
			return
		}
		if re := a.Marshal(); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, re)
		}
		// Structure is valid, so any refusal is about time or signature.
		err = calibration.VerifyAttestation(a, rejectAll{}, a.Time, time.Second)
		if !errors.Is(err, calibration.ErrBadSignature) {
			t.Fatalf("parsed attestation at its own time: %v", err)
		}
	})
}

type rejectAll struct{}

func (rejectAll) Verify(string, []byte, []byte) error { return errors.New("no keys") }
