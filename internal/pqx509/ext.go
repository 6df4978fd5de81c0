package pqx509

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/bits"
	"net"
	"net/url"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidExtSubjectKeyId     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtCRLNumber        = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidExtReasonCode       = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidExtNameConstraints  = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidExtCRLDistPoints    = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidExtAuthorityKeyId   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtAuthorityInfo    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidAccessOCSP          = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1}
	oidAccessCAIssuers     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 2}
	oidExtensionRequest    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidOCSPNonce           = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	oidOCSPBasic           = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidSHA1                = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256              = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
)

// extKeyUsageOIDs maps the crypto/x509 extended key usages this package
// knows to their OIDs; others travel as UnknownExtKeyUsage.
var extKeyUsageOIDs = []struct {
	u   x509.ExtKeyUsage
	oid asn1.ObjectIdentifier
}{
	{x509.ExtKeyUsageAny, asn1.ObjectIdentifier{2, 5, 29, 37, 0}},
	{x509.ExtKeyUsageServerAuth, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}},
	{x509.ExtKeyUsageClientAuth, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}},
	{x509.ExtKeyUsageCodeSigning, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}},
	{x509.ExtKeyUsageEmailProtection, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 4}},
	{x509.ExtKeyUsageIPSECEndSystem, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 5}},
	{x509.ExtKeyUsageIPSECTunnel, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 6}},
	{x509.ExtKeyUsageIPSECUser, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 7}},
	{x509.ExtKeyUsageTimeStamping, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}},
	{x509.ExtKeyUsageOCSPSigning, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 9}},
}

func ekuOID(u x509.ExtKeyUsage) (asn1.ObjectIdentifier, bool) {
	for _, e := range extKeyUsageOIDs {
		if e.u == u {
			return e.oid, true
		}
	}
	return nil, false
}

// readExtensions reads the contents of an Extensions SEQUENCE (one or
// more). A repeated OID is reported in dup rather than failing, so Lint can
// list it.
func readExtensions(s cryptobyte.String, what string) (exts []pkix.Extension, dup asn1.ObjectIdentifier, err error) {
	if s.Empty() {
		return nil, nil, malformed(what + ": empty extensions")
	}
	seen := map[string]bool{}
	for !s.Empty() {
		var e cryptobyte.String
		if !s.ReadASN1(&e, cbasn1.SEQUENCE) {
			return nil, nil, malformed(what)
		}
		var ext pkix.Extension
		if ext.Id, err = readOID(&e, what+": extnID"); err != nil {
			return nil, nil, err
		}
		if ext.Critical, err = readDefaultFalse(&e, what+": critical"); err != nil {
			return nil, nil, err
		}
		var v cryptobyte.String
		if !e.ReadASN1(&v, cbasn1.OCTET_STRING) || !e.Empty() {
			return nil, nil, malformed(what + ": extnValue")
		}
		ext.Value = []byte(v)
		k := ext.Id.String()
		if seen[k] && dup == nil {
			dup = ext.Id
		}
		seen[k] = true
		exts = append(exts, ext)
	}
	return exts, dup, nil
}

// addExtensions writes the contents of an Extensions SEQUENCE.
func addExtensions(b *cryptobyte.Builder, exts []pkix.Extension) {
	for _, e := range exts {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(e.Id)
			if e.Critical {
				b.AddASN1Boolean(true)
			}
			b.AddASN1OctetString(e.Value)
		})
	}
}

func findDuplicate(exts []pkix.Extension) asn1.ObjectIdentifier {
	seen := map[string]bool{}
	for _, e := range exts {
		if seen[e.Id.String()] {
			return e.Id
		}
		seen[e.Id.String()] = true
	}
	return nil
}

func marshalValue(f func(b *cryptobyte.Builder)) ([]byte, error) {
	var b cryptobyte.Builder
	f(&b)
	return build(&b)
}

// parseOnly runs f over the whole of der, which must be one element with
// nothing after it.
func parseOnly(der []byte, what string, f func(s *cryptobyte.String) error) error {
	s := cryptobyte.String(der)
	if err := f(&s); err != nil {
		return err
	}
	if !s.Empty() {
		return malformed(what + ": trailing data")
	}
	return nil
}

// ---- key usage ----

func marshalKeyUsage(ku x509.KeyUsage) ([]byte, error) {
	if ku <= 0 || ku >= 1<<9 {
		return nil, fmt.Errorf("key usage %#x: %w", int(ku), ErrInvalidTemplate)
	}
	var v [2]byte
	for i := 0; i < 9; i++ {
		if ku&(1<<i) != 0 {
			v[i/8] |= 0x80 >> (i % 8)
		}
	}
	n := 1
	if v[1] != 0 {
		n = 2
	}
	unused := bits.TrailingZeros8(v[n-1])
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
			b.AddUint8(uint8(unused))
			b.AddBytes(v[:n])
		})
	})
}

func parseKeyUsage(der []byte) (x509.KeyUsage, error) {
	const what = "keyUsage"
	var ku x509.KeyUsage
	err := parseOnly(der, what, func(s *cryptobyte.String) error {
		var bs cryptobyte.String
		if !s.ReadASN1(&bs, cbasn1.BIT_STRING) || len(bs) < 2 || len(bs) > 3 || bs[0] > 7 {
			return malformed(what)
		}
		unused, v := int(bs[0]), []byte(bs[1:])
		last := v[len(v)-1]
		// DER named bit list: no trailing zero bits, so the last byte is
		// not zero and has exactly `unused` trailing zero bits.
		if last == 0 || bits.TrailingZeros8(last) != unused {
			return malformed(what + ": not minimal")
		}
		for i := 0; i < len(v)*8; i++ {
			if v[i/8]&(0x80>>(i%8)) != 0 {
				if i >= 9 {
					return malformed(what + ": unknown bit")
				}
				ku |= 1 << i
			}
		}
		return nil
	})
	return ku, err
}

// ---- extended key usage ----

func marshalEKU(ekus []x509.ExtKeyUsage, unknown []asn1.ObjectIdentifier) ([]byte, error) {
	var oids []asn1.ObjectIdentifier
	for _, u := range ekus {
		oid, ok := ekuOID(u)
		if !ok {
			return nil, fmt.Errorf("extended key usage %d: %w", u, ErrInvalidTemplate)
		}
		oids = append(oids, oid)
	}
	oids = append(oids, unknown...)
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, o := range oids {
				b.AddASN1ObjectIdentifier(o)
			}
		})
	})
}

func parseEKU(der []byte) (known []x509.ExtKeyUsage, unknown []asn1.ObjectIdentifier, n int, err error) {
	const what = "extKeyUsage"
	err = parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return malformed(what)
		}
	next:
		for !seq.Empty() {
			oid, err := readOID(&seq, what)
			if err != nil {
				return err
			}
			n++
			for _, e := range extKeyUsageOIDs {
				if e.oid.Equal(oid) {
					known = append(known, e.u)
					continue next
				}
			}
			unknown = append(unknown, oid)
		}
		return nil
	})
	return known, unknown, n, err
}

// ---- basic constraints ----

func marshalBasicConstraints(isCA bool, maxPathLen int, maxPathLenZero bool) ([]byte, error) {
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if isCA {
				b.AddASN1Boolean(true)
			}
			if maxPathLen > 0 || (maxPathLen == 0 && maxPathLenZero) {
				b.AddASN1Int64(int64(maxPathLen))
			}
		})
	})
}

// parseBasicConstraints returns cA and the path length (-1 when absent).
func parseBasicConstraints(der []byte) (isCA bool, pathLen int, err error) {
	const what = "basicConstraints"
	pathLen = -1
	err = parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return malformed(what)
		}
		var err error
		if isCA, err = readDefaultFalse(&seq, what+": cA"); err != nil {
			return err
		}
		if seq.PeekASN1Tag(cbasn1.INTEGER) {
			var n int64
			if !seq.ReadASN1Int64WithTag(&n, cbasn1.INTEGER) || n < 0 || n > 1<<20 {
				return malformed(what + ": pathLenConstraint")
			}
			pathLen = int(n)
		}
		if !seq.Empty() {
			return malformed(what)
		}
		return nil
	})
	return isCA, pathLen, err
}

// ---- key identifiers ----

func marshalOctets(v []byte) ([]byte, error) {
	return marshalValue(func(b *cryptobyte.Builder) { b.AddASN1OctetString(v) })
}

func parseSKI(der []byte) ([]byte, error) {
	var out []byte
	err := parseOnly(der, "subjectKeyIdentifier", func(s *cryptobyte.String) error {
		var v cryptobyte.String
		if !s.ReadASN1(&v, cbasn1.OCTET_STRING) || len(v) == 0 {
			return malformed("subjectKeyIdentifier")
		}
		out = []byte(v)
		return nil
	})
	return out, err
}

func marshalAKI(keyID []byte) ([]byte, error) {
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(keyID) })
		})
	})
}

// parseAKI returns the keyIdentifier, if any; authorityCertIssuer and
// serial are accepted and ignored.
func parseAKI(der []byte) ([]byte, error) {
	const what = "authorityKeyIdentifier"
	var out []byte
	err := parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return malformed(what)
		}
		if seq.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific()) {
			var v cryptobyte.String
			if !seq.ReadASN1(&v, cbasn1.Tag(0).ContextSpecific()) || len(v) == 0 {
				return malformed(what)
			}
			out = []byte(v)
		}
		if seq.PeekASN1Tag(cbasn1.Tag(1).ContextSpecific().Constructed()) && !seq.SkipASN1(cbasn1.Tag(1).ContextSpecific().Constructed()) {
			return malformed(what)
		}
		if seq.PeekASN1Tag(cbasn1.Tag(2).ContextSpecific()) && !seq.SkipASN1(cbasn1.Tag(2).ContextSpecific()) {
			return malformed(what)
		}
		if !seq.Empty() {
			return malformed(what)
		}
		return nil
	})
	return out, err
}

// ---- general names ----

var (
	tagRFC822 = cbasn1.Tag(1).ContextSpecific()
	tagDNS    = cbasn1.Tag(2).ContextSpecific()
	tagURI    = cbasn1.Tag(6).ContextSpecific()
	tagIP     = cbasn1.Tag(7).ContextSpecific()
)

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// generalNames is the part of GeneralNames this package reads.
type generalNames struct {
	dns    []string
	emails []string
	ips    []net.IP
	uris   []*url.URL
	count  int // every name, also of forms not read
}

func (g *generalNames) empty() bool {
	return len(g.dns) == 0 && len(g.emails) == 0 && len(g.ips) == 0 && len(g.uris) == 0
}

func checkNames(dns, emails []string, ips []net.IP, uris []*url.URL) error {
	for _, d := range dns {
		if d == "" || !isIA5(d) {
			return fmt.Errorf("DNS name %q: %w", d, ErrInvalidTemplate)
		}
	}
	for _, e := range emails {
		if e == "" || !isIA5(e) {
			return fmt.Errorf("email %q: %w", e, ErrInvalidTemplate)
		}
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("IP address %v: %w", ip, ErrInvalidTemplate)
		}
	}
	for _, u := range uris {
		if u == nil || u.String() == "" || !isIA5(u.String()) {
			return fmt.Errorf("URI %v: %w", u, ErrInvalidTemplate)
		}
	}
	return nil
}

func addGeneralNames(b *cryptobyte.Builder, dns, emails []string, ips []net.IP, uris []*url.URL) {
	for _, e := range emails {
		b.AddASN1(tagRFC822, func(b *cryptobyte.Builder) { b.AddBytes([]byte(e)) })
	}
	for _, d := range dns {
		b.AddASN1(tagDNS, func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
	}
	for _, u := range uris {
		b.AddASN1(tagURI, func(b *cryptobyte.Builder) { b.AddBytes([]byte(u.String())) })
	}
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		b.AddASN1(tagIP, func(b *cryptobyte.Builder) { b.AddBytes(ip) })
	}
}

func marshalSAN(dns, emails []string, ips []net.IP, uris []*url.URL) ([]byte, error) {
	if err := checkNames(dns, emails, ips, uris); err != nil {
		return nil, err
	}
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addGeneralNames(b, dns, emails, ips, uris) })
	})
}

// readGeneralName reads one GeneralName into g.
func readGeneralName(s *cryptobyte.String, g *generalNames, what string) error {
	var v cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&v, &tag) {
		return malformed(what)
	}
	g.count++
	switch tag {
	case tagRFC822, tagDNS, tagURI:
		if len(v) == 0 || !isIA5(string(v)) {
			return malformed(what + ": IA5String")
		}
		switch tag {
		case tagRFC822:
			g.emails = append(g.emails, string(v))
		case tagDNS:
			g.dns = append(g.dns, string(v))
		default:
			u, err := url.Parse(string(v))
			if err != nil {
				return malformed(what + ": URI")
			}
			g.uris = append(g.uris, u)
		}
	case tagIP:
		if len(v) != net.IPv4len && len(v) != net.IPv6len {
			return malformed(what + ": iPAddress")
		}
		g.ips = append(g.ips, net.IP(bytes.Clone(v)))
	default:
		// otherName, directoryName and the rest: kept only in the raw
		// extension. Context tags 0-8 only.
		if tag&0x1f > 8 || tag&0xc0 != 0x80 {
			return malformed(what + ": GeneralName tag")
		}
	}
	return nil
}

func parseGeneralNames(der []byte, what string) (*generalNames, error) {
	g := &generalNames{}
	err := parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return malformed(what)
		}
		for !seq.Empty() {
			if err := readGeneralName(&seq, g, what); err != nil {
				return err
			}
		}
		return nil
	})
	return g, err
}

// ---- name constraints ----

func marshalNameConstraints(permDNS, exclDNS []string, permIP, exclIP []*net.IPNet) ([]byte, error) {
	subtrees := func(b *cryptobyte.Builder, dns []string, ips []*net.IPNet) {
		for _, d := range dns {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(tagDNS, func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
			})
		}
		for _, n := range ips {
			ip, mask := n.IP, n.Mask
			if v4 := ip.To4(); v4 != nil && len(mask) == net.IPv4len {
				ip = v4
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(tagIP, func(b *cryptobyte.Builder) { b.AddBytes(ip); b.AddBytes(mask) })
			})
		}
	}
	for _, d := range append(append([]string(nil), permDNS...), exclDNS...) {
		if d == "" || !isIA5(d) {
			return nil, fmt.Errorf("DNS name constraint %q: %w", d, ErrInvalidTemplate)
		}
	}
	for _, n := range append(append([]*net.IPNet(nil), permIP...), exclIP...) {
		if n == nil || !validIPNet(n.IP, n.Mask) {
			return nil, fmt.Errorf("IP range constraint %v: %w", n, ErrInvalidTemplate)
		}
	}
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if len(permDNS)+len(permIP) > 0 {
				b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { subtrees(b, permDNS, permIP) })
			}
			if len(exclDNS)+len(exclIP) > 0 {
				b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { subtrees(b, exclDNS, exclIP) })
			}
		})
	})
}

func validIPNet(ip net.IP, mask net.IPMask) bool {
	if v4 := ip.To4(); v4 != nil && len(mask) == net.IPv4len {
		ip = v4
	}
	if len(ip) != len(mask) || (len(ip) != net.IPv4len && len(ip) != net.IPv6len) {
		return false
	}
	ones, bitsLen := mask.Size()
	return !(ones == 0 && bitsLen == 0) // non-canonical masks give 0, 0
}

type nameConstraints struct {
	permDNS, exclDNS []string
	permIP, exclIP   []*net.IPNet
}

func parseNameConstraints(der []byte) (*nameConstraints, error) {
	const what = "nameConstraints"
	nc := &nameConstraints{}
	subtrees := func(s cryptobyte.String, dns *[]string, ips *[]*net.IPNet) error {
		if s.Empty() {
			return malformed(what + ": empty subtrees")
		}
		for !s.Empty() {
			var st cryptobyte.String
			if !s.ReadASN1(&st, cbasn1.SEQUENCE) {
				return malformed(what)
			}
			var v cryptobyte.String
			var tag cbasn1.Tag
			if !st.ReadAnyASN1(&v, &tag) || !st.Empty() { // minimum and maximum must be absent
				return malformed(what + ": subtree")
			}
			switch tag {
			case tagDNS:
				if len(v) == 0 || !isIA5(string(v)) {
					return malformed(what + ": dNSName")
				}
				*dns = append(*dns, string(v))
			case tagIP:
				if len(v) != 8 && len(v) != 32 {
					return malformed(what + ": iPAddress")
				}
				n := len(v) / 2
				ip, mask := net.IP(bytes.Clone(v[:n])), net.IPMask(bytes.Clone(v[n:]))
				if !validIPNet(ip, mask) {
					return malformed(what + ": iPAddress mask")
				}
				*ips = append(*ips, &net.IPNet{IP: ip, Mask: mask})
			default:
				return perr(what+": only dNSName and iPAddress constraints", ErrUnsupportedExtension)
			}
		}
		return nil
	}
	err := parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return malformed(what)
		}
		if seq.Empty() {
			return malformed(what + ": empty")
		}
		var p, e cryptobyte.String
		var hasP, hasE bool
		if !seq.ReadOptionalASN1(&p, &hasP, cbasn1.Tag(0).ContextSpecific().Constructed()) ||
			!seq.ReadOptionalASN1(&e, &hasE, cbasn1.Tag(1).ContextSpecific().Constructed()) || !seq.Empty() {
			return malformed(what)
		}
		if hasP {
			if err := subtrees(p, &nc.permDNS, &nc.permIP); err != nil {
				return err
			}
		}
		if hasE {
			if err := subtrees(e, &nc.exclDNS, &nc.exclIP); err != nil {
				return err
			}
		}
		return nil
	})
	return nc, err
}

// ---- authority information access and CRL distribution points ----

func marshalAIA(ocsp, caIssuers []string) ([]byte, error) {
	for _, u := range append(append([]string(nil), ocsp...), caIssuers...) {
		if u == "" || !isIA5(u) {
			return nil, fmt.Errorf("access location %q: %w", u, ErrInvalidTemplate)
		}
	}
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			add := func(method asn1.ObjectIdentifier, u string) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(method)
					b.AddASN1(tagURI, func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
				})
			}
			for _, u := range ocsp {
				add(oidAccessOCSP, u)
			}
			for _, u := range caIssuers {
				add(oidAccessCAIssuers, u)
			}
		})
	})
}

func parseAIA(der []byte) (ocsp, caIssuers []string, err error) {
	const what = "authorityInfoAccess"
	err = parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || seq.Empty() {
			return malformed(what)
		}
		for !seq.Empty() {
			var ad cryptobyte.String
			if !seq.ReadASN1(&ad, cbasn1.SEQUENCE) {
				return malformed(what)
			}
			method, err := readOID(&ad, what)
			if err != nil {
				return err
			}
			g := &generalNames{}
			if err := readGeneralName(&ad, g, what); err != nil {
				return err
			}
			if !ad.Empty() {
				return malformed(what)
			}
			for _, u := range g.uris {
				switch {
				case method.Equal(oidAccessOCSP):
					ocsp = append(ocsp, u.String())
				case method.Equal(oidAccessCAIssuers):
					caIssuers = append(caIssuers, u.String())
				}
			}
		}
		return nil
	})
	return ocsp, caIssuers, err
}

func marshalCRLDP(uris []string) ([]byte, error) {
	for _, u := range uris {
		if u == "" || !isIA5(u) {
			return nil, fmt.Errorf("CRL distribution point %q: %w", u, ErrInvalidTemplate)
		}
	}
	return marshalValue(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, u := range uris {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
							b.AddASN1(tagURI, func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
						})
					})
				})
			}
		})
	})
}

// parseCRLDP returns the fullName URIs of the distribution points.
func parseCRLDP(der []byte) ([]string, error) {
	const what = "cRLDistributionPoints"
	var out []string
	err := parseOnly(der, what, func(s *cryptobyte.String) error {
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || seq.Empty() {
			return malformed(what)
		}
		for !seq.Empty() {
			var dp cryptobyte.String
			if !seq.ReadASN1(&dp, cbasn1.SEQUENCE) {
				return malformed(what)
			}
			var name cryptobyte.String
			var has bool
			if !dp.ReadOptionalASN1(&name, &has, cbasn1.Tag(0).ContextSpecific().Constructed()) {
				return malformed(what)
			}
			if has {
				var full cryptobyte.String
				var hasFull bool
				if !name.ReadOptionalASN1(&full, &hasFull, cbasn1.Tag(0).ContextSpecific().Constructed()) {
					return malformed(what)
				}
				g := &generalNames{}
				for hasFull && !full.Empty() {
					if err := readGeneralName(&full, g, what); err != nil {
						return err
					}
				}
				for _, u := range g.uris {
					out = append(out, u.String())
				}
			}
			// reasons [1] and cRLIssuer [2] are accepted and not read.
			if dp.PeekASN1Tag(cbasn1.Tag(1).ContextSpecific()) && !dp.SkipASN1(cbasn1.Tag(1).ContextSpecific()) {
				return malformed(what)
			}
			if dp.PeekASN1Tag(cbasn1.Tag(2).ContextSpecific().Constructed()) && !dp.SkipASN1(cbasn1.Tag(2).ContextSpecific().Constructed()) {
				return malformed(what)
			}
			if !dp.Empty() {
				return malformed(what)
			}
		}
		return nil
	})
	return out, err
}

// ---- names ----

func marshalName(n pkix.Name) ([]byte, error) {
	return asn1.Marshal(n.ToRDNSequence())
}

func parseName(der []byte, what string) (pkix.Name, error) {
	var rdn pkix.RDNSequence
	rest, err := asn1.Unmarshal(der, &rdn)
	if err != nil || len(rest) != 0 {
		return pkix.Name{}, malformed(what)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdn)
	return n, nil
}

func lowerASCII(s string) string { return strings.ToLower(s) }
