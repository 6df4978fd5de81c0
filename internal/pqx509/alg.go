package pqx509

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Key algorithm names, as the KMS names them (sdk/kms), plus SLH-DSA by its
// FIPS 205 parameter set name.
const (
	MLDSA44   = "ML-DSA-44"
	MLDSA65   = "ML-DSA-65"
	MLDSA87   = "ML-DSA-87"
	ECDSAP256 = "ECDSA-P256"
	ECDSAP384 = "ECDSA-P384"
	Ed25519   = "Ed25519"
	// RSA subject keys, by modulus size (public exponent odd, at least
	// 3). RSA is accepted for subject keys and for the signatures of
	// CSRs only: nothing here signs with RSA (issuers stay ECDSA or
	// ML-DSA).
	RSA2048 = "RSA-2048"
	RSA3072 = "RSA-3072"
	RSA4096 = "RSA-4096"
)

// Signature algorithm names that differ from the key algorithm: ECDSA
// signatures name their hash. Every other signature algorithm has the name
// of its key algorithm (an ML-DSA-65 key makes ML-DSA-65 signatures).
const (
	ECDSAWithSHA256 = "ECDSA-SHA256"
	ECDSAWithSHA384 = "ECDSA-SHA384"
	// RSASSA-PKCS1-v1_5 (RFC 8017) over SHA-2, for CSRs with RSA keys.
	RSAWithSHA256 = "RSA-SHA256"
	RSAWithSHA384 = "RSA-SHA384"
	RSAWithSHA512 = "RSA-SHA512"
)

// rsaKeyPrefix starts the name of every RSA key algorithm.
const rsaKeyPrefix = "RSA-"

// isRSA reports whether a key or signature algorithm is RSA.
func isRSA(alg string) bool { return strings.HasPrefix(alg, rsaKeyPrefix) }

var (
	oidMLDSA44         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17}
	oidMLDSA65         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}
	oidMLDSA87         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256            = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384            = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAWithSHA256   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidRSAWithSHA384   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidRSAWithSHA512   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
)

// asn1NULL is the encoded NULL that RSA AlgorithmIdentifiers carry as
// parameters (RFC 4055 section 5, RFC 3279 section 2.3.1).
var asn1NULL = []byte{0x05, 0x00}

// keyAlg describes one public key algorithm.
type keyAlg struct {
	name   string
	oid    asn1.ObjectIdentifier // SPKI algorithm (id-ecPublicKey for ECDSA)
	curve  asn1.ObjectIdentifier // ECDSA named curve, else nil
	keyLen int                   // raw key bytes; 0 for RSA (checked by modulus size)
	bits   int                   // RSA modulus size
	sigAlg string                // the signature algorithm this key makes
}

// sigAlg describes one signature algorithm: its OID (parameters always
// absent) and the key algorithm that makes it.
type sigAlg struct {
	name   string
	oid    asn1.ObjectIdentifier
	keyAlg string // "" for RSA: any RSA key
	rsa    bool   // parameters NULL, hash by name
}

var (
	keyAlgs = map[string]keyAlg{}
	sigAlgs = map[string]sigAlg{}
)

// slhDSASets lists the SLH-DSA parameter sets in OID order (.20 to .31)
// with the public key length (2n).
var slhDSASets = []struct {
	name   string
	keyLen int
}{
	{"SLH-DSA-SHA2-128s", 32}, {"SLH-DSA-SHA2-128f", 32},
	{"SLH-DSA-SHA2-192s", 48}, {"SLH-DSA-SHA2-192f", 48},
	{"SLH-DSA-SHA2-256s", 64}, {"SLH-DSA-SHA2-256f", 64},
	{"SLH-DSA-SHAKE-128s", 32}, {"SLH-DSA-SHAKE-128f", 32},
	{"SLH-DSA-SHAKE-192s", 48}, {"SLH-DSA-SHAKE-192f", 48},
	{"SLH-DSA-SHAKE-256s", 64}, {"SLH-DSA-SHAKE-256f", 64},
}

func init() {
	pure := func(name string, oid asn1.ObjectIdentifier, keyLen int) {
		keyAlgs[name] = keyAlg{name: name, oid: oid, keyLen: keyLen, sigAlg: name}
		sigAlgs[name] = sigAlg{name: name, oid: oid, keyAlg: name}
	}
	pure(MLDSA44, oidMLDSA44, 1312)
	pure(MLDSA65, oidMLDSA65, 1952)
	pure(MLDSA87, oidMLDSA87, 2592)
	pure(Ed25519, oidEd25519, 32)
	for i, s := range slhDSASets {
		pure(s.name, asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 20 + i}, s.keyLen)
	}
	keyAlgs[ECDSAP256] = keyAlg{name: ECDSAP256, oid: oidECPublicKey, curve: oidP256, keyLen: 65, sigAlg: ECDSAWithSHA256}
	keyAlgs[ECDSAP384] = keyAlg{name: ECDSAP384, oid: oidECPublicKey, curve: oidP384, keyLen: 97, sigAlg: ECDSAWithSHA384}
	sigAlgs[ECDSAWithSHA256] = sigAlg{name: ECDSAWithSHA256, oid: oidECDSAWithSHA256, keyAlg: ECDSAP256}
	sigAlgs[ECDSAWithSHA384] = sigAlg{name: ECDSAWithSHA384, oid: oidECDSAWithSHA384, keyAlg: ECDSAP384}
	for _, bits := range []int{2048, 3072, 4096} {
		name := fmt.Sprintf("%s%d", rsaKeyPrefix, bits)
		keyAlgs[name] = keyAlg{name: name, oid: oidRSAEncryption, bits: bits, sigAlg: RSAWithSHA256}
	}
	sigAlgs[RSAWithSHA256] = sigAlg{name: RSAWithSHA256, oid: oidRSAWithSHA256, rsa: true}
	sigAlgs[RSAWithSHA384] = sigAlg{name: RSAWithSHA384, oid: oidRSAWithSHA384, rsa: true}
	sigAlgs[RSAWithSHA512] = sigAlg{name: RSAWithSHA512, oid: oidRSAWithSHA512, rsa: true}
}

// parseRSAKey decodes a PKCS#1 RSAPublicKey in DER (re-encoding to the
// same bytes) and returns it with its algorithm name; ErrBadKey for a
// malformed key, ErrUnsupportedAlgorithm for a modulus size other than
// 2048, 3072 or 4096 bits.
func parseRSAKey(raw []byte) (*rsa.PublicKey, string, error) {
	pk, err := x509.ParsePKCS1PublicKey(raw)
	if err != nil || !bytes.Equal(x509.MarshalPKCS1PublicKey(pk), raw) {
		return nil, "", fmt.Errorf("RSA public key is not DER PKCS#1: %w", ErrBadKey)
	}
	if pk.E < 3 || pk.E%2 == 0 || pk.N.Bit(0) == 0 {
		return nil, "", fmt.Errorf("RSA public key: exponent %d or an even modulus: %w", pk.E, ErrBadKey)
	}
	name := fmt.Sprintf("%s%d", rsaKeyPrefix, pk.N.BitLen())
	if a, ok := keyAlgs[name]; !ok || a.bits == 0 {
		return nil, "", fmt.Errorf("RSA key of %d bits (2048, 3072 or 4096): %w", pk.N.BitLen(), ErrUnsupportedAlgorithm)
	}
	return pk, name, nil
}

// SignatureAlgorithmFor returns the signature algorithm a key of the given
// algorithm makes ("ECDSA-SHA384" for "ECDSA-P384", "ML-DSA-65" for
// "ML-DSA-65").
func SignatureAlgorithmFor(keyAlgorithm string) (string, error) {
	k, ok := keyAlgs[keyAlgorithm]
	if !ok {
		return "", fmt.Errorf("pqx509: key algorithm %q: %w", keyAlgorithm, ErrUnsupportedAlgorithm)
	}
	return k.sigAlg, nil
}

// PublicKey is a subject public key: the algorithm's KMS name and the raw
// key bytes (the subjectPublicKey BIT STRING contents): FIPS 204/205
// encodings for ML-DSA and SLH-DSA, an uncompressed SEC 1 point for ECDSA,
// 32 bytes for Ed25519.
type PublicKey struct {
	Algorithm string
	Raw       []byte
}

// Equal reports whether both keys are the same.
func (k PublicKey) Equal(o PublicKey) bool {
	return k.Algorithm == o.Algorithm && string(k.Raw) == string(o.Raw)
}

// check validates the key's length and, for ECDSA, that the point is on the
// curve.
func (k PublicKey) check() error {
	a, ok := keyAlgs[k.Algorithm]
	if !ok {
		return fmt.Errorf("key algorithm %q: %w", k.Algorithm, ErrUnsupportedAlgorithm)
	}
	if a.bits > 0 {
		_, name, err := parseRSAKey(k.Raw)
		if err != nil {
			return err
		}
		if name != k.Algorithm {
			return fmt.Errorf("%s key is %s: %w", k.Algorithm, name, ErrBadKey)
		}
		return nil
	}
	if len(k.Raw) != a.keyLen {
		return fmt.Errorf("%s key of %d bytes, want %d: %w", k.Algorithm, len(k.Raw), a.keyLen, ErrBadKey)
	}
	switch k.Algorithm {
	case ECDSAP256:
		if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), k.Raw); err != nil {
			return fmt.Errorf("%s point: %w", k.Algorithm, ErrBadKey)
		}
	case ECDSAP384:
		if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P384(), k.Raw); err != nil {
			return fmt.Errorf("%s point: %w", k.Algorithm, ErrBadKey)
		}
	}
	return nil
}

// MarshalSPKI encodes a SubjectPublicKeyInfo. ML-DSA, SLH-DSA and Ed25519
// have absent parameters; ECDSA is id-ecPublicKey with a named curve.
func MarshalSPKI(k PublicKey) ([]byte, error) {
	if err := k.check(); err != nil {
		return nil, fmt.Errorf("pqx509: marshal public key: %w", err)
	}
	var b cryptobyte.Builder
	addSPKI(&b, k)
	return build(&b)
}

func addSPKI(b *cryptobyte.Builder, k PublicKey) {
	a := keyAlgs[k.Algorithm]
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(a.oid)
			if a.curve != nil {
				b.AddASN1ObjectIdentifier(a.curve)
			}
			if a.bits > 0 {
				b.AddBytes(asn1NULL)
			}
		})
		addBitStringBytes(b, k.Raw)
	})
}

// ParseSPKI decodes a DER SubjectPublicKeyInfo, refusing trailing bytes,
// parameters where they must be absent, and keys of the wrong length.
func ParseSPKI(der []byte) (PublicKey, error) {
	s := cryptobyte.String(der)
	k, err := readSPKI(&s)
	if err != nil {
		return PublicKey{}, err
	}
	if !s.Empty() {
		return PublicKey{}, malformed("subjectPublicKeyInfo: trailing data")
	}
	return k, nil
}

func readSPKI(s *cryptobyte.String) (PublicKey, error) {
	const what = "subjectPublicKeyInfo"
	var spki, algID cryptobyte.String
	if !s.ReadASN1(&spki, cbasn1.SEQUENCE) || !spki.ReadASN1(&algID, cbasn1.SEQUENCE) {
		return PublicKey{}, malformed(what)
	}
	oid, err := readOID(&algID, what+": algorithm")
	if err != nil {
		return PublicKey{}, err
	}
	var k PublicKey
	if oid.Equal(oidECPublicKey) {
		curve, err := readOID(&algID, what+": named curve")
		if err != nil {
			return PublicKey{}, perr(what+": ECDSA parameters", ErrBadParameters)
		}
		switch {
		case curve.Equal(oidP256):
			k.Algorithm = ECDSAP256
		case curve.Equal(oidP384):
			k.Algorithm = ECDSAP384
		default:
			return PublicKey{}, perr(what+": curve "+curve.String(), ErrUnsupportedAlgorithm)
		}
	} else if oid.Equal(oidRSAEncryption) {
		if !bytes.Equal(algID, asn1NULL) {
			return PublicKey{}, perr(what+": RSA parameters must be NULL", ErrBadParameters)
		}
		algID = nil
		raw, err := readBitStringBytes(&spki, what+": subjectPublicKey")
		if err != nil {
			return PublicKey{}, err
		}
		if !spki.Empty() {
			return PublicKey{}, malformed(what + ": trailing data")
		}
		_, name, err := parseRSAKey(raw)
		if err != nil {
			return PublicKey{}, perr(what, err)
		}
		return PublicKey{Algorithm: name, Raw: raw}, nil
	} else {
		for name, a := range keyAlgs {
			if a.curve == nil && a.bits == 0 && a.oid.Equal(oid) {
				k.Algorithm = name
				break
			}
		}
		if k.Algorithm == "" {
			return PublicKey{}, perr(what+": algorithm "+oid.String(), ErrUnsupportedAlgorithm)
		}
	}
	if !algID.Empty() {
		return PublicKey{}, perr(what+": "+k.Algorithm+" parameters", ErrBadParameters)
	}
	raw, err := readBitStringBytes(&spki, what+": subjectPublicKey")
	if err != nil {
		return PublicKey{}, err
	}
	if !spki.Empty() {
		return PublicKey{}, malformed(what + ": trailing data")
	}
	k.Raw = raw
	if err := k.check(); err != nil {
		return PublicKey{}, perr(what, err)
	}
	return k, nil
}

// addSigAlg writes the AlgorithmIdentifier of a signature algorithm
// (parameters absent, NULL for RSA).
func addSigAlg(b *cryptobyte.Builder, name string) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(sigAlgs[name].oid)
		if sigAlgs[name].rsa {
			b.AddBytes(asn1NULL)
		}
	})
}

// readSigAlg reads a signature AlgorithmIdentifier and returns its raw
// encoding and name.
func readSigAlg(s *cryptobyte.String, what string) (raw []byte, name string, err error) {
	var el, algID cryptobyte.String
	if !s.ReadASN1Element(&el, cbasn1.SEQUENCE) {
		return nil, "", malformed(what)
	}
	c := el
	if !c.ReadASN1(&algID, cbasn1.SEQUENCE) {
		return nil, "", malformed(what)
	}
	oid, err := readOID(&algID, what)
	if err != nil {
		return nil, "", err
	}
	for n, a := range sigAlgs {
		if a.oid.Equal(oid) {
			name = n
			break
		}
	}
	if name == "" {
		return nil, "", perr(what+": "+oid.String(), ErrUnsupportedAlgorithm)
	}
	if sigAlgs[name].rsa {
		if !bytes.Equal(algID, asn1NULL) {
			return nil, "", perr(what+": "+name+" parameters must be NULL", ErrBadParameters)
		}
	} else if !algID.Empty() {
		return nil, "", perr(what+": "+name+" parameters must be absent", ErrBadParameters)
	}
	return []byte(el), name, nil
}

// checkSigAlgKey reports whether a signature algorithm belongs to a key.
func checkSigAlgKey(sig string, key PublicKey) error {
	a, ok := sigAlgs[sig]
	if !ok {
		return fmt.Errorf("signature algorithm %q: %w", sig, ErrUnsupportedAlgorithm)
	}
	if a.rsa && isRSA(key.Algorithm) {
		return nil
	}
	if a.rsa || a.keyAlg != key.Algorithm {
		return fmt.Errorf("%s signature with a %s key: %w", sig, key.Algorithm, ErrAlgorithmMismatch)
	}
	return nil
}
