package pqx509

import (
	"encoding/asn1"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Strict DER helpers. cryptobyte already refuses indefinite and non-minimal
// lengths, high tag numbers and non-minimal INTEGERs; these add the rules it
// leaves to the caller.

const maxSerialOctets = 20

// readSerial reads an INTEGER serial: positive, at most 20 octets.
func readSerial(s *cryptobyte.String, what string) (*big.Int, error) {
	var raw cryptobyte.String
	peek := *s
	if !peek.ReadASN1(&raw, cbasn1.INTEGER) {
		return nil, malformed(what)
	}
	n := new(big.Int)
	if !s.ReadASN1Integer(n) {
		return nil, malformed(what)
	}
	if n.Sign() <= 0 || len(raw) > maxSerialOctets {
		return nil, perr(what, ErrBadSerial)
	}
	return n, nil
}

// addSerial encodes a serial after checking it.
func checkSerial(n *big.Int) error {
	if n == nil || n.Sign() <= 0 {
		return ErrBadSerial
	}
	// DER adds a leading zero octet when the top bit is set.
	if n.BitLen()/8+1 > maxSerialOctets {
		return ErrBadSerial
	}
	return nil
}

// readBitStringBytes reads a BIT STRING with no unused bits.
func readBitStringBytes(s *cryptobyte.String, what string) ([]byte, error) {
	var bs cryptobyte.String
	if !s.ReadASN1(&bs, cbasn1.BIT_STRING) || len(bs) < 1 || bs[0] != 0 {
		return nil, malformed(what)
	}
	return []byte(bs[1:]), nil
}

func addBitStringBytes(b *cryptobyte.Builder, v []byte) {
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
		b.AddUint8(0)
		b.AddBytes(v)
	})
}

const (
	utcLayout         = "060102150405Z"
	generalizedLayout = "20060102150405Z"
)

// readTime reads an RFC 5280 Time: UTCTime for 1950-2049, GeneralizedTime
// otherwise, both in the exact Z form with seconds and no fraction.
func readTime(s *cryptobyte.String, what string) (time.Time, error) {
	switch {
	case s.PeekASN1Tag(cbasn1.UTCTime):
		var v cryptobyte.String
		if !s.ReadASN1(&v, cbasn1.UTCTime) || len(v) != len(utcLayout) {
			return time.Time{}, malformed(what)
		}
		t, err := parseExact(utcLayout, string(v))
		if err != nil {
			return time.Time{}, malformed(what)
		}
		// Go maps YY 69-99 to 19YY and 00-68 to 20YY; RFC 5280 uses 50.
		if t.Year() >= 2050 {
			t = t.AddDate(-100, 0, 0)
		}
		return t, nil
	case s.PeekASN1Tag(cbasn1.GeneralizedTime):
		t, err := readGeneralizedTime(s, what)
		if err != nil {
			return time.Time{}, err
		}
		if y := t.Year(); y >= 1950 && y < 2050 {
			return time.Time{}, malformed(what + " (GeneralizedTime before 2050)")
		}
		return t, nil
	}
	return time.Time{}, malformed(what)
}

// readGeneralizedTime reads a GeneralizedTime YYYYMMDDHHMMSSZ.
func readGeneralizedTime(s *cryptobyte.String, what string) (time.Time, error) {
	var v cryptobyte.String
	if !s.ReadASN1(&v, cbasn1.GeneralizedTime) || len(v) != len(generalizedLayout) {
		return time.Time{}, malformed(what)
	}
	t, err := parseExact(generalizedLayout, string(v))
	if err != nil {
		return time.Time{}, malformed(what)
	}
	return t, nil
}

func parseExact(layout, v string) (time.Time, error) {
	for i := 0; i < len(v)-1; i++ {
		if v[i] < '0' || v[i] > '9' {
			return time.Time{}, ErrMalformed
		}
	}
	t, err := time.Parse(layout, v)
	if err != nil {
		return time.Time{}, err
	}
	if t.Format(layout) != v {
		return time.Time{}, ErrMalformed
	}
	// In the UTCTime layout Go reads 50-68 as 2050-2068; undo that here
	// only for the check above, the caller maps the century.
	return t.UTC(), nil
}

// addTime writes t as an RFC 5280 Time.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format(utcLayout))) })
		return
	}
	addGeneralizedTime(b, t)
}

func addGeneralizedTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	b.AddASN1(cbasn1.GeneralizedTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format(generalizedLayout))) })
}

func timeEncodable(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// readOID reads an OBJECT IDENTIFIER.
func readOID(s *cryptobyte.String, what string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1ObjectIdentifier(&oid) {
		return nil, malformed(what)
	}
	return oid, nil
}

// readBool reads a BOOLEAN with a DEFAULT FALSE: present only when TRUE.
func readDefaultFalse(s *cryptobyte.String, what string) (bool, error) {
	if !s.PeekASN1Tag(cbasn1.BOOLEAN) {
		return false, nil
	}
	var v bool
	if !s.ReadASN1Boolean(&v) {
		return false, malformed(what)
	}
	if !v {
		return false, malformed(what + " (DEFAULT FALSE encoded)")
	}
	return true, nil
}

// build finishes a builder, mapping its error.
func build(b *cryptobyte.Builder) ([]byte, error) {
	out, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	return out, nil
}

// rawElement reads one whole TLV (with header) of any tag.
func rawElement(s *cryptobyte.String, what string) ([]byte, error) {
	var el cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1Element(&el, &tag) {
		return nil, malformed(what)
	}
	return []byte(el), nil
}
