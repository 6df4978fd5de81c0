package pqx509

import (
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

func TestTimeEncoding(t *testing.T) {
	el := func(tag cbasn1.Tag, v string) []byte {
		var b cryptobyte.Builder
		b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
		return b.BytesOrPanic()
	}
	cases := []struct {
		name string
		der  []byte
		want time.Time // zero: refused
	}{
		{"UTCTime 2049", el(cbasn1.UTCTime, "491231235959Z"), time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)},
		{"UTCTime 1950", el(cbasn1.UTCTime, "500101000000Z"), time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"UTCTime leap day 1952", el(cbasn1.UTCTime, "520229120000Z"), time.Date(1952, 2, 29, 12, 0, 0, 0, time.UTC)},
		{"GeneralizedTime 2050", el(cbasn1.GeneralizedTime, "20500101000000Z"), time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"GeneralizedTime before 2050", el(cbasn1.GeneralizedTime, "20491231235959Z"), time.Time{}},
		{"UTCTime without seconds", el(cbasn1.UTCTime, "4912312359Z"), time.Time{}},
		{"UTCTime with offset", el(cbasn1.UTCTime, "491231235959+0100"), time.Time{}},
		{"GeneralizedTime with fraction", el(cbasn1.GeneralizedTime, "20500101000000.5Z"), time.Time{}},
		{"UTCTime Feb 30", el(cbasn1.UTCTime, "250230000000Z"), time.Time{}},
		{"UTCTime sign", el(cbasn1.UTCTime, "25+230000000Z"), time.Time{}},
		{"wrong tag", el(cbasn1.OCTET_STRING, "491231235959Z"), time.Time{}},
	}
	for _, c := range cases {
		s := cryptobyte.String(c.der)
		got, err := readTime(&s, "time")
		if c.want.IsZero() {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: accepted (%v, %v)", c.name, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("%s: got %v, %v", c.name, got, err)
			continue
		}
		var b cryptobyte.Builder
		addTime(&b, got)
		if string(b.BytesOrPanic()) != string(c.der) {
			t.Errorf("%s: re-encoded as %x", c.name, b.BytesOrPanic())
		}
	}
}

func TestStrictDERDetails(t *testing.T) {
	// critical FALSE encoded (a DEFAULT value) is not DER.
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidExtSubjectKeyId)
		b.AddASN1Boolean(false)
		b.AddASN1OctetString([]byte{4, 1, 1})
	})
	if _, _, err := readExtensions(cryptobyte.String(b.BytesOrPanic()), "ext"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("critical FALSE: %v", err)
	}
	// cA FALSE encoded.
	if _, _, err := parseBasicConstraints([]byte{0x30, 0x03, 0x01, 0x01, 0x00}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("cA FALSE: %v", err)
	}
	// Non-minimal INTEGER serial.
	s := cryptobyte.String([]byte{0x02, 0x02, 0x00, 0x05})
	if _, err := readSerial(&s, "serial"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("non-minimal serial: %v", err)
	}
	// keyUsage with a trailing zero bit.
	if _, err := parseKeyUsage([]byte{0x03, 0x02, 0x01, 0x80}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("non-minimal keyUsage: %v", err)
	}
	if ku, err := parseKeyUsage([]byte{0x03, 0x02, 0x07, 0x80}); err != nil || ku != 1 {
		t.Fatalf("digitalSignature: %v %v", ku, err)
	}
}

func TestParseCertificateRefuses(t *testing.T) {
	s := newMLDSASigner(t, MLDSA44)
	spki, _ := MarshalSPKI(s.Public())
	var alg cryptobyte.Builder
	addSigAlg(&alg, MLDSA44)
	name, _ := marshalName(pkix.Name{CommonName: "x"})
	ski, _ := marshalOctets([]byte{1})
	mk := func(serial *big.Int, exts []pkix.Extension, outer string) []byte {
		tbs, err := encodeTBS(3, serial, alg.BytesOrPanic(), name, testNow, testNow.Add(time.Hour), name, spki, exts)
		if err != nil {
			t.Fatal(err)
		}
		sig, _ := s.Sign(context.Background(), tbs)
		der, err := assembleSigned(tbs, outer, sig)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	if _, err := ParseCertificate(mk(big.NewInt(1), nil, MLDSA44)); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for _, c := range []struct {
		name string
		der  []byte
		want error
	}{
		{"unknown critical", mk(big.NewInt(1), []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Critical: true, Value: []byte{5, 0}}}, MLDSA44), ErrUnknownCriticalExtension},
		{"duplicate", mk(big.NewInt(1), []pkix.Extension{{Id: oidExtSubjectKeyId, Value: ski}, {Id: oidExtSubjectKeyId, Value: ski}}, MLDSA44), ErrDuplicateExtension},
		{"negative serial", mk(big.NewInt(-1), nil, MLDSA44), ErrBadSerial},
		{"21-octet serial", mk(new(big.Int).Lsh(big.NewInt(1), 160), nil, MLDSA44), ErrBadSerial},
		{"outer algorithm differs", mk(big.NewInt(1), nil, MLDSA65), ErrAlgorithmMismatch},
		{"trailing byte", append(mk(big.NewInt(1), nil, MLDSA44), 0), ErrMalformed},
	} {
		_, err := ParseCertificate(c.der)
		var pe *ParseError
		if !errors.Is(err, c.want) || !errors.As(err, &pe) {
			t.Errorf("%s: want %v, got %v", c.name, c.want, err)
		}
	}
}
