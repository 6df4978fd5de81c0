package ca

import (
	"reflect"
	"testing"
	"time"

	sdkca "github.com/avonzt/avon/sdk/ca"
)

// splitRequest builds an IssueRequest from the bytes of a, cut at the
// positions cuts gives (the first bytes of cuts, each modulo the length
// left), so that two requests from one byte string differ only in where
// their fields begin and end.
func splitRequest(a, cuts []byte) sdkca.IssueRequest {
	next := func() []byte {
		if len(cuts) == 0 || len(a) == 0 {
			out := a
			a = nil
			return out
		}
		n := int(cuts[0]) % (len(a) + 1)
		cuts = cuts[1:]
		out := a[:n]
		a = a[n:]
		return out
	}
	str := func() string { return string(next()) }
	list := func() []string {
		var out []string
		for range len(cuts) % 3 {
			out = append(out, str())
		}
		return out
	}
	r := sdkca.IssueRequest{CSR: next(), PublicKey: next(), PublicKeyAlgorithm: str(), Profile: str(), Issuer: str(), CommonName: str()}
	r.DNSNames, r.IPAddresses, r.URIs = list(), list(), list()
	r.Lifetime = time.Duration(len(a))
	return r
}

// FuzzRequestDigest: two requests have one digest exactly when they ask
// for the same thing, however their bytes are cut into fields (the
// fields are length-prefixed), so a repeated IssueOnce request is never
// mistaken for another.
func FuzzRequestDigest(f *testing.F) {
	f.Add([]byte("csr-bytes.example.test"), []byte{3, 4}, []byte{4, 3})
	f.Add([]byte("aaaa"), []byte{1, 1, 1}, []byte{2, 1})
	f.Add([]byte{}, []byte{}, []byte{0})
	f.Fuzz(func(t *testing.T, a, cuts1, cuts2 []byte) {
		r1, r2 := splitRequest(a, cuts1), splitRequest(a, cuts2)
		same := reflect.DeepEqual(normalized(r1), normalized(r2))
		if d1, d2 := requestDigest(&r1), requestDigest(&r2); (d1 == d2) != same {
			t.Fatalf("digests equal %v, requests equal %v:\n%+v\n%+v", d1 == d2, same, r1, r2)
		}
	})
}

// normalized makes empty and nil slices alike, as the digest (and the
// wire) does.
func normalized(r sdkca.IssueRequest) sdkca.IssueRequest {
	for _, b := range []*[]byte{&r.CSR, &r.PublicKey} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	for _, l := range []*[]string{&r.DNSNames, &r.IPAddresses, &r.URIs} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return r
}
