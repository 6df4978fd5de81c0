package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SignHeader is what Sign puts in the protected header besides alg.
type SignHeader struct {
	Nonce string
	URL   string
	KID   string // set: kid; empty: the signer's jwk is embedded
	// Extra members, marshalled as given (tests use it to break rules).
	Extra map[string]any
}

// Sign makes a flattened JWS of payload with signer (ECDSA P-256/P-384,
// Ed25519, RSA), the way ACME clients do. It is what the tests and the
// revocation-by-certificate-key path of clients use; the server never
// signs with it.
func Sign(rand io.Reader, signer crypto.Signer, h SignHeader, payload []byte) ([]byte, error) {
	k, err := NewJWK(signer.Public())
	if err != nil {
		return nil, err
	}
	hdr := map[string]any{"alg": k.Alg}
	if h.Nonce != "" {
		hdr["nonce"] = h.Nonce
	}
	if h.URL != "" {
		hdr["url"] = h.URL
	}
	if h.KID != "" {
		hdr["kid"] = h.KID
	} else {
		hdr["jwk"] = json.RawMessage(k.canonical)
	}
	for name, v := range h.Extra {
		if v == nil {
			delete(hdr, name)
			continue
		}
		hdr[name] = v
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	alg, _ := hdr["alg"].(string)
	protected, payload64 := Encode(hb), Encode(payload)
	sig, err := signRaw(rand, signer, k, alg, []byte(protected+"."+payload64))
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"protected": protected, "payload": payload64, "signature": Encode(sig)})
}

// signRaw signs msg as alg names it with signer's key (k's algorithm when
// alg is one the key cannot use: the tests use that for a mismatch).
func signRaw(rand io.Reader, signer crypto.Signer, k *JWK, alg string, msg []byte) ([]byte, error) {
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey:
		var d []byte
		if k.Alg == ES256 {
			s := sha256.Sum256(msg)
			d = s[:]
		} else {
			s := sha512.Sum384(msg)
			d = s[:]
		}
		der, err := signer.Sign(rand, d, crypto.Hash(0))
		if err != nil {
			return nil, err
		}
		var r, s []byte
		in := cryptobyte.String(der)
		var seq cryptobyte.String
		if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) {
			return nil, fmt.Errorf("ecdsa signature does not parse")
		}
		size := (pub.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		copy(out[size-len(trim(r)):size], trim(r))
		copy(out[2*size-len(trim(s)):], trim(s))
		return out, nil
	case ed25519.PublicKey:
		return signer.Sign(rand, msg, crypto.Hash(0))
	case *rsa.PublicKey:
		d := sha256.Sum256(msg)
		return signer.Sign(rand, d[:], crypto.SHA256)
	}
	return nil, fmt.Errorf("key type %T: %w", k.Key, ErrBadKey)
}

func trim(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}
