package pqx509

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// rawCSR assembles a request from encoded parts, signed by s, so tests can
// present what CreateCSR refuses to make.
func rawCSR(t *testing.T, spki []byte, exts []pkix.Extension, sigName string, s Signer) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		name, _ := marshalName(pkix.Name{CommonName: "raw"})
		b.AddBytes(name)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			if len(exts) == 0 {
				return
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidExtensionRequest)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addExtensions(b, exts) })
				})
			})
		})
	})
	tbs := b.BytesOrPanic()
	sig, err := s.Sign(context.Background(), tbs)
	if err != nil {
		t.Fatal(err)
	}
	der, err := assembleSigned(tbs, sigName, sig)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestBadCSR(t *testing.T) {
	ctx := context.Background()
	s44 := newMLDSASigner(t, MLDSA44)
	spki44, _ := MarshalSPKI(s44.Public())
	ca, _ := marshalBasicConstraints(true, -1, false)
	san, _ := marshalSAN([]string{"a.test"}, nil, nil, nil)

	// Sanity: the raw builder makes a valid request.
	if c, err := ParseCSR(rawCSR(t, spki44, nil, MLDSA44, s44)); err != nil || c.Validate(nil) != nil {
		t.Fatalf("raw CSR baseline: %v", err)
	}

	t.Run("bad signature", func(t *testing.T) {
		der := rawCSR(t, spki44, nil, MLDSA44, s44)
		der[len(der)-100] ^= 0x01
		c, err := ParseCSR(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(nil); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("signature algorithm of another key", func(t *testing.T) {
		_, err := ParseCSR(rawCSR(t, spki44, nil, MLDSA65, s44))
		var pe *ParseError
		if !errors.Is(err, ErrAlgorithmMismatch) || !errors.As(err, &pe) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong key length", func(t *testing.T) {
		short := s44.Public()
		short.Raw = short.Raw[:len(short.Raw)-1]
		var b cryptobyte.Builder
		addSPKI(&b, PublicKey{Algorithm: MLDSA44, Raw: short.Raw})
		_, err := ParseCSR(rawCSR(t, b.BytesOrPanic(), nil, MLDSA44, s44))
		if !errors.Is(err, ErrBadKey) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("requests cA", func(t *testing.T) {
		der, err := CreateCSR(ctx, CSRTemplate{Subject: pkix.Name{CommonName: "x"},
			ExtraExtensions: []pkix.Extension{{Id: oidExtBasicConstraints, Critical: true, Value: ca}}}, s44)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseCSR(der)
		if err != nil || !c.RequestsCA {
			t.Fatalf("RequestsCA not seen: %v", err)
		}
		if err := c.Validate(nil); !errors.Is(err, ErrRequestsCA) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("duplicate extensions", func(t *testing.T) {
		dup := []pkix.Extension{{Id: oidExtSubjectAltName, Value: san}, {Id: oidExtSubjectAltName, Value: san}}
		if _, err := ParseCSR(rawCSR(t, spki44, dup, MLDSA44, s44)); !errors.Is(err, ErrDuplicateExtension) {
			t.Fatalf("parse: %v", err)
		}
		if _, err := CreateCSR(ctx, CSRTemplate{ExtraExtensions: dup}, s44); !errors.Is(err, ErrDuplicateExtension) {
			t.Fatalf("create: %v", err)
		}
	})
	t.Run("unknown critical extension", func(t *testing.T) {
		c, err := ParseCSR(rawCSR(t, spki44, []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}}, MLDSA44, s44))
		if err != nil || len(c.UnknownCriticalExtensions) != 1 {
			t.Fatalf("parse: %v", err)
		}
		if err := c.Validate(nil); !errors.Is(err, ErrUnknownCriticalExtension) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("trailing byte", func(t *testing.T) {
		if _, err := ParseCSR(append(rawCSR(t, spki44, nil, MLDSA44, s44), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestLintRules(t *testing.T) {
	s := newMLDSASigner(t, MLDSA65)
	pub := s.Public()
	spki, _ := MarshalSPKI(pub)
	var alg cryptobyte.Builder
	addSigAlg(&alg, MLDSA65)
	sigAlg := alg.BytesOrPanic()
	name := func(cn string) []byte { b, _ := marshalName(pkix.Name{CommonName: cn}); return b }
	empty, _ := marshalName(pkix.Name{})
	ext := func(oid asn1.ObjectIdentifier, critical bool, v []byte, err error) pkix.Extension {
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: oid, Critical: critical, Value: v}
	}
	ku := func(k x509.KeyUsage) pkix.Extension {
		v, err := marshalKeyUsage(k)
		return ext(oidExtKeyUsage, true, v, err)
	}
	bc := func(critical, isCA bool, pl int) pkix.Extension {
		v, err := marshalBasicConstraints(isCA, pl, pl == 0)
		return ext(oidExtBasicConstraints, critical, v, err)
	}
	ski := func() pkix.Extension {
		v, err := marshalOctets(keyID(pub))
		return ext(oidExtSubjectKeyId, false, v, err)
	}
	aki := func() pkix.Extension {
		v, err := marshalAKI([]byte{1, 2, 3})
		return ext(oidExtAuthorityKeyId, false, v, err)
	}
	sanV, _ := marshalSAN([]string{"a.test"}, nil, nil, nil)
	ncV, _ := marshalNameConstraints([]string{"a.test"}, nil, nil, nil)
	ekuV, _ := marshalEKU([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil)
	caExts := []pkix.Extension{ku(x509.KeyUsageCertSign), bc(true, true, -1), ski()}
	leafExts := []pkix.Extension{ku(x509.KeyUsageDigitalSignature), ski(), aki(), ext(oidExtExtKeyUsage, false, ekuV, nil)}
	nb, na := testNow, testNow.Add(time.Hour)
	with := func(base []pkix.Extension, more ...pkix.Extension) []pkix.Extension {
		return append(append([]pkix.Extension(nil), base...), more...)
	}
	var key44 cryptobyte.Builder
	addSPKI(&key44, PublicKey{Algorithm: MLDSA44, Raw: make([]byte, 1311)})
	algNull := append([]byte{0x30, 0x0d}, append(oidBytes(oidMLDSA65), 0x05, 0x00)...)

	type tc struct {
		name    string
		version int
		serial  *big.Int
		sigAlg  []byte
		issuer  []byte
		nb, na  time.Time
		subject []byte
		spki    []byte
		exts    []pkix.Extension
		want    LintRule
	}
	good := tc{version: 3, serial: big.NewInt(5), sigAlg: sigAlg, issuer: name("CA"), nb: nb, na: na, subject: name("leaf"), spki: spki, exts: leafExts}
	root := good
	root.issuer, root.subject, root.exts = name("root"), name("root"), caExts
	cases := []tc{
		{name: "good leaf"}, {name: "good root"},
	}
	mod := func(n string, base tc, want LintRule, f func(*tc)) {
		c := base
		f(&c)
		c.name, c.want = n, want
		cases = append(cases, c)
	}
	cases[0] = good
	cases[0].name = "good leaf"
	cases[1] = root
	cases[1].name = "good root"
	mod("v2", good, RuleVersion, func(c *tc) { c.version = 2 })
	mod("negative serial", good, RuleSerial, func(c *tc) { c.serial = big.NewInt(-5) })
	mod("zero serial", good, RuleSerial, func(c *tc) { c.serial = big.NewInt(0) })
	mod("21-octet serial", good, RuleSerial, func(c *tc) { c.serial = new(big.Int).Lsh(big.NewInt(1), 160) })
	mod("NULL parameters", good, RuleSignatureAlgorithm, func(c *tc) { c.sigAlg = algNull })
	mod("validity reversed", good, RuleValidity, func(c *tc) { c.nb, c.na = na, nb })
	mod("empty issuer", good, RuleIssuerEmpty, func(c *tc) { c.issuer = empty })
	mod("basicConstraints not critical", root, RuleBasicConstraintsCrit, func(c *tc) {
		c.exts = []pkix.Extension{ku(x509.KeyUsageCertSign), bc(false, true, -1), ski()}
	})
	mod("keyCertSign without cA", good, RuleKeyCertSignCA, func(c *tc) { c.exts = with(leafExts[1:], ku(x509.KeyUsageCertSign)) })
	mod("pathLen without cA", good, RulePathLenCA, func(c *tc) { c.exts = with(leafExts, bc(true, false, 2)) })
	mod("empty subject, no SAN", good, RuleSANRequired, func(c *tc) { c.subject = empty })
	mod("empty subject, SAN not critical", good, RuleSANCritical, func(c *tc) {
		c.subject = empty
		c.exts = with(leafExts, ext(oidExtSubjectAltName, false, sanV, nil))
	})
	mod("empty SAN", good, RuleSANEmpty, func(c *tc) { c.exts = with(leafExts, ext(oidExtSubjectAltName, false, []byte{0x30, 0}, nil)) })
	mod("name constraints on a leaf", good, RuleNameConstraintsCA, func(c *tc) { c.exts = with(leafExts, ext(oidExtNameConstraints, true, ncV, nil)) })
	mod("name constraints not critical", root, RuleNameConstraintsCrit, func(c *tc) { c.exts = with(caExts, ext(oidExtNameConstraints, false, ncV, nil)) })
	mod("empty EKU", good, RuleEKUEmpty, func(c *tc) { c.exts = with(leafExts[:3], ext(oidExtExtKeyUsage, false, []byte{0x30, 0}, nil)) })
	mod("duplicate extension", good, RuleDuplicateExtension, func(c *tc) { c.exts = with(leafExts, ski()) })
	mod("unknown critical extension", good, RuleUnknownCritical, func(c *tc) {
		c.exts = with(leafExts, ext(asn1.ObjectIdentifier{1, 2, 3, 4}, true, []byte{5, 0}, nil))
	})
	mod("no AKI", good, RuleAKI, func(c *tc) { c.exts = with(leafExts[:2], leafExts[3]) })
	mod("CA without SKI", root, RuleSKI, func(c *tc) { c.exts = caExts[:2] })
	mod("short ML-DSA-44 key", good, RuleKeyLength, func(c *tc) { c.spki = key44.BytesOrPanic() })

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tbs, err := encodeTBS(c.version, c.serial, c.sigAlg, c.issuer, c.nb, c.na, c.subject, c.spki, c.exts)
			if err != nil {
				t.Fatal(err)
			}
			f := Lint(tbs)
			if c.want == "" {
				if len(f) != 0 {
					t.Fatalf("findings on a good TBS: %v", f)
				}
				return
			}
			found := false
			for _, x := range f {
				found = found || x.Rule == c.want
			}
			if !found {
				t.Fatalf("want %s, got %v", c.want, f)
			}
		})
	}
	if f := Lint([]byte{0x30, 0x80, 0, 0}); len(f) != 1 || f[0].Rule != RuleDER {
		t.Fatalf("BER: %v", f)
	}
}

func TestCreateCertificateRefuses(t *testing.T) {
	ctx := context.Background()
	s := newMLDSASigner(t, MLDSA65)
	// A CA template with several findings: all are listed.
	tmpl := rootTemplate("bad", s.Public())
	tmpl.SerialNumber = big.NewInt(-1)
	tmpl.NotAfter = tmpl.NotBefore.Add(-time.Hour)
	_, err := CreateCertificate(ctx, tmpl, nil, s)
	var le *LintError
	if !errors.As(err, &le) || len(le.Findings) != 2 {
		t.Fatalf("want a LintError with 2 findings, got %v", err)
	}
	// A signer that is not the parent's key.
	ch := makeChain(t, func() Signer { return newMLDSASigner(t, MLDSA44) })
	if _, err := CreateCertificate(ctx, leafTemplate("x", s.Public()), ch.inter, ch.rootS); !errors.Is(err, ErrSignerMismatch) {
		t.Fatalf("wrong signer: %v", err)
	}
	// A signer whose signature does not verify.
	if _, err := CreateCertificate(ctx, leafTemplate("x", s.Public()), ch.inter, brokenSigner{ch.interS}); !errors.Is(err, ErrSignerMismatch) {
		t.Fatalf("broken signer: %v", err)
	}
}

type brokenSigner struct{ Signer }

func (b brokenSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sig, err := b.Signer.Sign(ctx, msg)
	sig[0] ^= 1
	return sig, err
}

func TestVerifyFailures(t *testing.T) {
	ctx := context.Background()
	ns := func() Signer { return newMLDSASigner(t, MLDSA44) }
	ch := makeChain(t, ns)
	other := makeChain(t, ns)
	opts := func() VerifyOptions {
		return VerifyOptions{Roots: []*Certificate{ch.root}, Intermediates: []*Certificate{ch.inter}, CurrentTime: testNow,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	issue := func(parent *Certificate, ps Signer, tmpl *Template) *Certificate {
		der, err := CreateCertificate(ctx, tmpl, parent, ps)
		return mustCert(t, der, err)
	}
	want := func(name string, leaf *Certificate, o VerifyOptions, reason InvalidReason) {
		t.Helper()
		_, err := Verify(leaf, o)
		var ce *CertificateInvalidError
		if !errors.As(err, &ce) || ce.Reason != reason {
			t.Fatalf("%s: want %v, got %v", name, reason, err)
		}
	}
	if _, err := Verify(ch.leaf, opts()); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	o := opts()
	o.CurrentTime = ch.leaf.NotAfter.Add(time.Second)
	want("expired", ch.leaf, o, Expired)
	o = opts()
	o.Intermediates = []*Certificate{other.inter}
	want("wrong issuer", ch.leaf, o, UnknownAuthority)
	o = opts()
	o.Intermediates = []*Certificate{other.inter, ch.inter}
	if _, err := Verify(ch.leaf, o); err != nil {
		t.Fatalf("with an unrelated intermediate too: %v", err)
	}

	// An intermediate without cA signs a leaf.
	nonCAS := ns()
	nt := leafTemplate("not a CA", nonCAS.Public())
	nonCA := issue(ch.root, ch.rootS, nt)
	leaf2 := issue(nonCA, nonCAS, leafTemplate("l2.avon.test", ns().Public()))
	o = opts()
	o.Intermediates = []*Certificate{nonCA}
	want("missing cA", leaf2, o, NotAuthorizedToSign)

	// The intermediate has pathLen 0: a second intermediate below it exceeds it.
	sub2S := ns()
	sub2 := issue(ch.inter, ch.interS, rootTemplate("sub2", sub2S.Public()))
	leaf3 := issue(sub2, sub2S, leafTemplate("l3.avon.test", ns().Public()))
	o = opts()
	o.Intermediates = []*Certificate{ch.inter, sub2}
	want("pathLen exceeded", leaf3, o, TooManyIntermediates)

	// Name constraints: permitted corp.test only.
	ncS := ns()
	nct := rootTemplate("constrained", ncS.Public())
	nct.PermittedDNSDomains = []string{"corp.test"}
	nc := issue(ch.root, ch.rootS, nct)
	okLeaf := issue(nc, ncS, leafTemplate("a.corp.test", ns().Public()))
	badLeaf := issue(nc, ncS, leafTemplate("a.avon.test", ns().Public()))
	o = opts()
	o.Intermediates = []*Certificate{nc}
	if _, err := Verify(okLeaf, o); err != nil {
		t.Fatalf("permitted name: %v", err)
	}
	want("name constraints", badLeaf, o, CANotAuthorizedForThisName)

	// EKU: the leaf is server+client; ask for code signing.
	o = opts()
	o.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	want("EKU mismatch", ch.leaf, o, IncompatibleUsage)
	o.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	if _, err := Verify(ch.leaf, o); err != nil {
		t.Fatalf("any usage: %v", err)
	}

	o = opts()
	o.DNSName = "other.avon.test"
	want("DNS name", ch.leaf, o, NameMismatch)

	// A tampered leaf signature.
	b := bytes.Clone(ch.leaf.Raw)
	b[len(b)-20] ^= 1
	tampered, err := ParseCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	want("bad signature", tampered, opts(), BadSignature)
}
