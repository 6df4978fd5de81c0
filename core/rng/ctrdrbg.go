package rng

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math/bits"
	"sync"
)

// Parameters of CTR_DRBG with AES-256 (SP 800-90A Rev.1, Table 3).
const (
	KeyLen  = 32              // keylen in bytes
	OutLen  = aes.BlockSize   // outlen in bytes (one AES block)
	SeedLen = KeyLen + OutLen // seedlen in bytes (384 bits)

	// SecurityStrength is the DRBG's security strength in bits.
	SecurityStrength = 256

	// MaxRequestBytes is max_number_of_bits_per_request (2^19 bits) in bytes.
	MaxRequestBytes = 1 << 16

	// MaxReseedInterval is the largest reseed_interval SP 800-90A allows for
	// CTR_DRBG (2^48 requests).
	MaxReseedInterval = uint64(1) << 48

	// MaxInputLen bounds entropy input, nonce, personalization string and
	// additional input when the derivation function is used. SP 800-90A
	// permits up to 2^35 bits; this implementation accepts up to 64 KiB,
	// which is far more than any caller in the project passes.
	MaxInputLen = 1 << 16

	// MinNonceLen is the shortest nonce accepted with the derivation
	// function: half the security strength.
	MinNonceLen = SecurityStrength / 16
)

// smallRequest is the largest request served block by block; longer ones
// go through the pipelined CTR mode of crypto/cipher.
const smallRequest = 8 * OutLen

// CTRDRBG is the deterministic part of the generator: CTR_DRBG per
// SP 800-90A Rev.1 §10.2.1 with AES-256, with or without the block cipher
// derivation function (§10.3.2). It draws no entropy itself; callers supply
// entropy input, nonce and additional input, which is what known-answer
// tests need. It is not safe for concurrent use; Generator wraps it.
//
// The expanded AES key schedule for the current Key is kept between calls
// and replaced (the old one overwritten) every time Update changes Key.
type CTRDRBG struct {
	df             bool
	instantiated   bool
	key            [KeyLen]byte
	v              [OutLen]byte
	block          cipher.Block // AES-256 under key; nil when not instantiated
	reseedCounter  uint64
	reseedInterval uint64
}

// NewCTRDRBG returns an uninstantiated DRBG, with the derivation function
// when df is true, and reseed_interval MaxReseedInterval.
func NewCTRDRBG(df bool) *CTRDRBG {
	return &CTRDRBG{df: df, reseedInterval: MaxReseedInterval}
}

// SetReseedInterval sets reseed_interval: Generate fails with
// ErrReseedRequired once more than n requests were served since the last
// (re)seed. n must be in [1, MaxReseedInterval].
func (d *CTRDRBG) SetReseedInterval(n uint64) error {
	if n == 0 || n > MaxReseedInterval {
		return ErrConfig
	}
	d.reseedInterval = n
	return nil
}

// DerivationFunction reports whether the DRBG uses Block_Cipher_df.
func (d *CTRDRBG) DerivationFunction() bool { return d.df }

// ReseedCounter returns reseed_counter (1 right after a (re)seed).
func (d *CTRDRBG) ReseedCounter() uint64 { return d.reseedCounter }

// NeedsReseed reports whether the next Generate would return
// ErrReseedRequired.
func (d *CTRDRBG) NeedsReseed() bool { return d.reseedCounter > d.reseedInterval }

// Instantiate seeds the DRBG (§10.2.1.3). With the derivation function,
// entropy must be at least SecurityStrength/8 bytes, nonce at least
// MinNonceLen bytes, and all three at most MaxInputLen bytes. Without it,
// entropy must be exactly SeedLen bytes of full entropy, nonce must be empty
// and pers at most SeedLen bytes (shorter strings are zero-padded). On a
// length error nothing changes.
func (d *CTRDRBG) Instantiate(entropy, nonce, pers []byte) error {
	if err := d.checkEntropy(entropy); err != nil {
		return err
	}
	if d.df {
		if err := checkLen("nonce", len(nonce), MinNonceLen, MaxInputLen); err != nil {
			return err
		}
	} else if err := checkLen("nonce", len(nonce), 0, 0); err != nil {
		return err
	}
	if err := d.checkInput("personalization", pers); err != nil {
		return err
	}
	var seed [SeedLen]byte
	defer clear(seed[:])
	if d.df {
		blockCipherDF(seed[:], entropy, nonce, pers)
	} else {
		copy(seed[:], pers)
		subtleXOR(seed[:], entropy)
	}
	d.Uninstantiate()
	d.rekey() // Key = 0^keylen, V = 0^outlen
	d.update(&seed)
	d.reseedCounter = 1
	d.instantiated = true
	return nil
}

// Reseed mixes fresh entropy and optional additional input into the state
// (§10.2.1.4). Length rules are those of Instantiate (additional input as
// the personalization string). On error nothing changes.
func (d *CTRDRBG) Reseed(entropy, additional []byte) error {
	if !d.instantiated {
		return ErrNotInstantiated
	}
	if err := d.checkEntropy(entropy); err != nil {
		return err
	}
	if err := d.checkInput("additional", additional); err != nil {
		return err
	}
	var seed [SeedLen]byte
	defer clear(seed[:])
	if d.df {
		blockCipherDF(seed[:], entropy, additional)
	} else {
		copy(seed[:], additional)
		subtleXOR(seed[:], entropy)
	}
	d.update(&seed)
	d.reseedCounter = 1
	return nil
}

// Generate fills out (at most MaxRequestBytes) with pseudorandom bytes,
// mixing in optional additional input (§10.2.1.5). It returns
// ErrReseedRequired when the reseed counter passed the reseed interval.
// On error nothing changes and out is left untouched.
func (d *CTRDRBG) Generate(out, additional []byte) error {
	if !d.instantiated {
		return ErrNotInstantiated
	}
	if err := checkLen("request", len(out), 0, MaxRequestBytes); err != nil {
		return err
	}
	if err := d.checkInput("additional", additional); err != nil {
		return err
	}
	if d.NeedsReseed() {
		return ErrReseedRequired
	}
	var add [SeedLen]byte
	defer clear(add[:])
	if len(additional) > 0 {
		if d.df {
			blockCipherDF(add[:], additional)
		} else {
			copy(add[:], additional)
		}
		d.update(&add)
	}
	if len(out) > smallRequest {
		// AES-CTR from V+1 yields E(V+1) || E(V+2) || ..., the generate
		// loop of §10.2.1.5 (the counter field is the whole block, so V
		// increments modulo 2^128 exactly as in CTR mode).
		iv := d.v
		addCounter(&iv, 1)
		clear(out)
		stream := cipher.NewCTR(d.block, iv[:])
		stream.XORKeyStream(out, out)
		wipeObject(stream)
		clear(iv[:])
		addCounter(&d.v, uint64((len(out)+OutLen-1)/OutLen))
	} else {
		var blk [OutLen]byte
		for i := 0; i < len(out); i += OutLen {
			addCounter(&d.v, 1)
			d.block.Encrypt(blk[:], d.v[:])
			copy(out[i:], blk[:])
		}
		clear(blk[:])
	}
	d.update(&add)
	d.reseedCounter++
	return nil
}

// Uninstantiate overwrites Key, V and the expanded key schedule with zeros
// and returns the DRBG to the uninstantiated state.
func (d *CTRDRBG) Uninstantiate() {
	clear(d.key[:])
	clear(d.v[:])
	if d.block != nil {
		wipeObject(d.block)
		d.block = nil
	}
	d.reseedCounter = 0
	d.instantiated = false
}

func (d *CTRDRBG) checkEntropy(entropy []byte) error {
	if d.df {
		return checkLen("entropy", len(entropy), SecurityStrength/8, MaxInputLen)
	}
	return checkLen("entropy", len(entropy), SeedLen, SeedLen)
}

func (d *CTRDRBG) checkInput(field string, b []byte) error {
	if d.df {
		return checkLen(field, len(b), 0, MaxInputLen)
	}
	return checkLen(field, len(b), 0, SeedLen)
}

func checkLen(field string, n, lo, hi int) error {
	if n < lo || n > hi {
		return &InputError{Field: field, Len: n, Min: lo, Max: hi}
	}
	return nil
}

// update is CTR_DRBG_Update (§10.2.1.2): three blocks of AES-CTR from V+1
// XORed with provided, split into the new Key and V.
func (d *CTRDRBG) update(provided *[SeedLen]byte) {
	var temp [SeedLen]byte
	for i := 0; i < SeedLen; i += OutLen {
		addCounter(&d.v, 1)
		d.block.Encrypt(temp[i:i+OutLen], d.v[:])
	}
	subtleXOR(temp[:], provided[:])
	copy(d.key[:], temp[:KeyLen])
	copy(d.v[:], temp[KeyLen:])
	clear(temp[:])
	d.rekey()
}

// rekey expands the current key and overwrites the previous schedule, so
// that the keys of earlier states do not linger in memory.
func (d *CTRDRBG) rekey() {
	b, err := aes.NewCipher(d.key[:])
	if err != nil {
		panic("rng: aes.NewCipher with a 32-byte key: " + err.Error()) // unreachable
	}
	if d.block != nil {
		wipeObject(d.block)
	}
	d.block = b
}

// addCounter adds n to the 128-bit big-endian counter v, modulo 2^128.
func addCounter(v *[OutLen]byte, n uint64) {
	lo := binary.BigEndian.Uint64(v[8:])
	hi := binary.BigEndian.Uint64(v[:8])
	lo, c := bits.Add64(lo, n, 0)
	hi += c
	binary.BigEndian.PutUint64(v[8:], lo)
	binary.BigEndian.PutUint64(v[:8], hi)
}

func subtleXOR(dst, src []byte) {
	for i := range min(len(dst), len(src)) {
		dst[i] ^= src[i]
	}
}

// dfKeyBlock is AES-256 under the fixed Block_Cipher_df key 0x00 01 .. 1F.
var dfKeyBlock = sync.OnceValue(func() cipher.Block {
	var k [KeyLen]byte
	for i := range k {
		k[i] = byte(i)
	}
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic("rng: aes.NewCipher: " + err.Error()) // unreachable
	}
	return b
})

// blockCipherDF is Block_Cipher_df (§10.3.2) over the concatenation of
// parts, writing len(out) bytes (at most SeedLen). Every intermediate buffer
// holding input material is overwritten before it returns.
func blockCipherDF(out []byte, parts ...[]byte) {
	l := 0
	for _, p := range parts {
		l += len(p)
	}
	// S = L || N || input_string || 0x80, zero-padded to a multiple of outlen.
	sLen := (8 + l + 1 + OutLen - 1) / OutLen * OutLen
	s := make([]byte, sLen)
	defer clear(s)
	binary.BigEndian.PutUint32(s[0:], uint32(l))
	binary.BigEndian.PutUint32(s[4:], uint32(len(out)))
	off := 8
	for _, p := range parts {
		off += copy(s[off:], p)
	}
	s[off] = 0x80

	k0 := dfKeyBlock()
	var temp [SeedLen]byte
	defer clear(temp[:])
	for i := 0; i < SeedLen; i += OutLen {
		var iv [OutLen]byte
		binary.BigEndian.PutUint32(iv[:], uint32(i/OutLen))
		bcc(k0, temp[i:i+OutLen], iv[:], s)
	}
	kb, err := aes.NewCipher(temp[:KeyLen])
	if err != nil {
		panic("rng: aes.NewCipher: " + err.Error()) // unreachable
	}
	defer wipeObject(kb)
	x := temp[KeyLen:]
	for i := 0; i < len(out); i += OutLen {
		kb.Encrypt(x, x)
		copy(out[i:], x)
	}
}

// bcc is the BCC function (§10.3.3) over iv || data, writing the final
// chaining value to chain (OutLen bytes). len(data) is a multiple of OutLen.
func bcc(b cipher.Block, chain, iv, data []byte) {
	clear(chain)
	subtleXOR(chain, iv)
	b.Encrypt(chain, chain)
	for i := 0; i < len(data); i += OutLen {
		subtleXOR(chain, data[i:i+OutLen])
		b.Encrypt(chain, chain)
	}
}
