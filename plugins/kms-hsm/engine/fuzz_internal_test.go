package engine

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/kms"
)

// Records come from host storage: decodeRecord must refuse anything
// malformed with ErrCorrupt and never panic, and what it accepts must
// re-encode to a record it accepts again.
func FuzzDecodeRecord(f *testing.F) {
	now := time.Unix(1700000000, 0).UTC()
	good := []*record{
		{Format: recordFormat, ID: "k1", Algorithm: kms.ECDSAP256, Primary: 1, Created: now,
			Versions: []versionRecord{{Version: 1, State: kms.StateEnabled, Created: now, Public: make([]byte, 65), Object: make([]byte, 16)}}},
		{Format: recordFormat, ID: "k2", Algorithm: kms.MLDSA65, Primary: 2, Created: now, Labels: map[string]string{"a": "b"},
			Versions: []versionRecord{
				{Version: 1, State: kms.StateDestroyed, Created: now, Destroyed: now},
				{Version: 2, State: kms.StateEnabled, Created: now, Public: make([]byte, publicKeySize(kms.MLDSA65)), Wrapped: make([]byte, wrappedSize(kms.MLDSA65))}}},
		{Format: recordFormat, ID: "k3", Algorithm: kms.AES256, Primary: 1, Created: now,
			Versions: []versionRecord{{Version: 1, State: kms.StateEnabled, Created: now, Object: make([]byte, 16)}}},
	}
	for _, r := range good {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := decodeRecord(r.ID, b); err != nil {
			f.Fatalf("seed record %s refused: %v", r.ID, err)
		}
		f.Add(r.ID, b)
	}
	f.Add("k1", []byte(`{"format":1}`))
	f.Add("k1", []byte(`null`))
	f.Add("k1", []byte(`{"format":1,"id":"k1","algorithm":"ECDSA-P256","primary":9,"versions":[]}`))
	f.Fuzz(func(t *testing.T, id string, b []byte) {
		r, err := decodeRecord(id, b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeRecord(id, again); err != nil {
			t.Fatalf("an accepted record does not survive a round trip: %v", err)
		}
		// Operations on an accepted record cannot index out of range.
		_, _ = r.version(0)
		_ = r.key()
	})
}

// The token's CKA_EC_POINT and signature encodings are parsed defensively.
func FuzzECPoint(f *testing.F) {
	f.Add([]byte{0x04, 0x41, 0x04})
	f.Add(append([]byte{0x04, 0x20}, make([]byte, 32)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range []kms.Algorithm{kms.ECDSAP256, kms.ECDSAP384, kms.Ed25519} {
			if p, err := ecPoint(a, b); err == nil && len(p) != publicKeySize(a) {
				t.Fatalf("%s point of %d bytes accepted", a, len(p))
			}
			_, _ = derSignature(a, b)
		}
	})
}
