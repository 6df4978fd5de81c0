package control

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unicode/utf8"
)

// reader consumes a body field by field. The first failure sticks: every
// later read returns zero values, and err says what went wrong first.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
	}
	r.b = nil
}

// take returns the next n bytes, or nil after a failure or when fewer are
// left (then it fails with ErrTruncated naming what).
func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail(ErrTruncated, "%s: %d bytes left, want %d", what, len(r.b), n)
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8(what string) uint8 {
	if b := r.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if b := r.take(2, what); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if b := r.take(4, what); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if b := r.take(8, what); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) token(what string) (t [TokenLen]byte) {
	if b := r.take(TokenLen, what); b != nil {
		copy(t[:], b)
	}
	return t
}

// bytes8 reads a u8 length (at most max) and that many bytes, copied (the
// input buffer is the caller's and is reused). Zero bytes read as nil.
func (r *reader) bytes8(max int, what string) []byte {
	n := int(r.u8(what + " length"))
	if r.err != nil {
		return nil
	}
	if n > max {
		r.fail(ErrTooLarge, "%s of %d bytes, limit %d", what, n, max)
		return nil
	}
	b := r.take(n, what)
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// str reads a string of n bytes that must be UTF-8 and at most max long;
// n was read by the caller (u8 or u16 length).
func (r *reader) str(n, min, max int, what string) string {
	if r.err != nil {
		return ""
	}
	if n > max {
		r.fail(ErrTooLarge, "%s of %d bytes, limit %d", what, n, max)
		return ""
	}
	if n < min {
		r.fail(ErrMalformed, "%s of %d bytes, minimum %d", what, n, min)
		return ""
	}
	b := r.take(n, what)
	if b == nil {
		return ""
	}
	if !utf8.Valid(b) {
		r.fail(ErrMalformed, "%s is not UTF-8", what)
		return ""
	}
	return string(b)
}

func (r *reader) str8(min, max int, what string) string {
	n := int(r.u8(what + " length"))
	return r.str(n, min, max, what)
}

func (r *reader) str16(min, max int, what string) string {
	n := int(r.u16(what + " length"))
	return r.str(n, min, max, what)
}

// addr reads family u8 | address [4 or 16].
func (r *reader) addr(what string) netip.Addr {
	fam := r.u8(what + " family")
	if r.err != nil {
		return netip.Addr{}
	}
	switch fam {
	case 4:
		if b := r.take(4, what); b != nil {
			return netip.AddrFrom4([4]byte(b))
		}
	case 6:
		if b := r.take(16, what); b != nil {
			a := netip.AddrFrom16([16]byte(b))
			if a.Is4In6() {
				r.fail(ErrMalformed, "%s %v: IPv4-mapped (send it as family 4)", what, a)
				return netip.Addr{}
			}
			return a
		}
	default:
		r.fail(ErrMalformed, "%s family %d", what, fam)
	}
	return netip.Addr{}
}

// prefix reads family u8 | bits u8 | address.
func (r *reader) prefix(what string) netip.Prefix {
	fam := r.u8(what + " family")
	bits := int(r.u8(what + " bits"))
	if r.err != nil {
		return netip.Prefix{}
	}
	var a netip.Addr
	switch fam {
	case 4:
		if b := r.take(4, what); b != nil {
			a = netip.AddrFrom4([4]byte(b))
		}
	case 6:
		if b := r.take(16, what); b != nil {
			a = netip.AddrFrom16([16]byte(b))
		}
	default:
		r.fail(ErrMalformed, "%s family %d", what, fam)
	}
	if r.err != nil {
		return netip.Prefix{}
	}
	if a.Is4In6() {
		r.fail(ErrMalformed, "%s %v: IPv4-mapped (send it as family 4)", what, a)
		return netip.Prefix{}
	}
	if bits > a.BitLen() {
		r.fail(ErrMalformed, "%s: %d bits for a %d-bit address", what, bits, a.BitLen())
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

// end fails with ErrMalformed when bytes are left after the last field.
func (r *reader) end(what string) {
	if r.err == nil && len(r.b) != 0 {
		r.fail(ErrMalformed, "%s: %d bytes after the last field", what, len(r.b))
	}
}

// Writers: each checks what the matching reader checks, so Marshal refuses
// exactly what Parse would.

func appendAddr(b []byte, a netip.Addr, what string) ([]byte, error) {
	switch {
	case !a.IsValid():
		return b, fmt.Errorf("%s: no address: %w", what, ErrMalformed)
	case a.Zone() != "":
		return b, fmt.Errorf("%s %v: zones do not travel: %w", what, a, ErrMalformed)
	case a.Is4In6():
		return b, fmt.Errorf("%s %v: IPv4-mapped (use the IPv4 address): %w", what, a, ErrMalformed)
	case a.Is4():
		s := a.As4()
		return append(append(b, 4), s[:]...), nil
	default:
		s := a.As16()
		return append(append(b, 6), s[:]...), nil
	}
}

func appendPrefix(b []byte, p netip.Prefix, what string) ([]byte, error) {
	if !p.IsValid() {
		return b, fmt.Errorf("%s %v: invalid prefix: %w", what, p, ErrMalformed)
	}
	a := p.Addr()
	if a.Is4In6() {
		return b, fmt.Errorf("%s %v: IPv4-mapped (use the IPv4 prefix): %w", what, p, ErrMalformed)
	}
	fam := byte(4)
	if a.Is6() {
		fam = 6
	}
	b = append(b, fam, byte(p.Bits()))
	return append(b, a.AsSlice()...), nil
}

func appendString(b []byte, s string, wide bool, min, max int, what string) ([]byte, error) {
	switch {
	case len(s) > max:
		return b, fmt.Errorf("%s of %d bytes, limit %d: %w", what, len(s), max, ErrTooLarge)
	case len(s) < min:
		return b, fmt.Errorf("%s of %d bytes, minimum %d: %w", what, len(s), min, ErrMalformed)
	case !utf8.ValidString(s):
		return b, fmt.Errorf("%s is not UTF-8: %w", what, ErrMalformed)
	}
	if wide {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	} else {
		b = append(b, byte(len(s)))
	}
	return append(b, s...), nil
}

func appendBytes8(b, v []byte, max int, what string) ([]byte, error) {
	if len(v) > max {
		return b, fmt.Errorf("%s of %d bytes, limit %d: %w", what, len(v), max, ErrTooLarge)
	}
	return append(append(b, byte(len(v))), v...), nil
}
