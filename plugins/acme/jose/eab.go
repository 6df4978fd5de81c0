package jose

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
)

// HS256 is the MAC algorithm of external account binding (RFC 8555
// 7.3.4); it is accepted by ParseEAB only, never for a request's JWS.
const HS256 = "HS256"

// EAB is a parsed external account binding: a flattened JWS MACed with a
// key the operator handed out, over the account's public key.
type EAB struct {
	KID     string
	URL     string
	Payload []byte // the account's JWK
	mac     []byte
	input   []byte
}

// ParseEAB parses the externalAccountBinding member of a newAccount
// payload: a flattened JWS with alg HS256, a kid, a url, no nonce.
func ParseEAB(body []byte) (*EAB, error) {
	members, err := uniqueObject("externalAccountBinding", body)
	if err != nil {
		return nil, err
	}
	for name := range members {
		switch name {
		case "protected", "payload", "signature":
		default:
			return nil, fmt.Errorf("externalAccountBinding: unexpected member %q: %w", name, ErrMalformed)
		}
	}
	get := func(name string) ([]byte, string, error) {
		s, ok := jsonString(members[name])
		if !ok {
			return nil, "", fmt.Errorf("externalAccountBinding: %q missing or not a string: %w", name, ErrMalformed)
		}
		b, err := decodeB64("externalAccountBinding "+name, s)
		return b, s, err
	}
	hb, h64, err := get("protected")
	if err != nil {
		return nil, err
	}
	payload, p64, err := get("payload")
	if err != nil {
		return nil, err
	}
	mac, _, err := get("signature")
	if err != nil {
		return nil, err
	}
	hm, err := uniqueObject("externalAccountBinding header", hb)
	if err != nil {
		return nil, err
	}
	var e EAB
	str := func(name string) (string, bool) { return jsonString(hm[name]) }
	if alg, _ := str("alg"); alg != HS256 {
		return nil, fmt.Errorf("externalAccountBinding alg %q, want HS256: %w", alg, ErrUnsupportedAlgorithm)
	}
	var ok bool
	if e.KID, ok = str("kid"); !ok || e.KID == "" {
		return nil, fmt.Errorf("externalAccountBinding has no kid: %w", ErrMalformed)
	}
	if e.URL, ok = str("url"); !ok {
		return nil, fmt.Errorf("externalAccountBinding has no url: %w", ErrMalformed)
	}
	if _, ok := hm["nonce"]; ok {
		return nil, fmt.Errorf("externalAccountBinding must not have a nonce: %w", ErrMalformed)
	}
	if _, ok := hm["jwk"]; ok {
		return nil, fmt.Errorf("externalAccountBinding must not have a jwk: %w", ErrMalformed)
	}
	e.Payload, e.mac, e.input = payload, mac, []byte(h64+"."+p64)
	return &e, nil
}

// Verify checks the MAC with the binding key.
func (e *EAB) Verify(key []byte) error {
	m := hmac.New(sha256.New, key)
	m.Write(e.input)
	if !hmac.Equal(m.Sum(nil), e.mac) {
		return fmt.Errorf("externalAccountBinding MAC: %w", ErrBadSignature)
	}
	return nil
}

// SignEAB makes an external account binding for the account key jwk, as a
// client does.
func SignEAB(kid string, key []byte, url string, jwk *JWK) []byte {
	h := Encode([]byte(fmt.Sprintf(`{"alg":"HS256","kid":%q,"url":%q}`, kid, url)))
	p := Encode(jwk.canonical)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(h + "." + p))
	return []byte(fmt.Sprintf(`{"protected":%q,"payload":%q,"signature":%q}`, h, p, Encode(m.Sum(nil))))
}

// jsonString decodes raw as a JSON string; false when absent or not one.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}
