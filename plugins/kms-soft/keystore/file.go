package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// File layout, format version 1 (integers big-endian; FORMAT.md has the
// reasoning):
//
//	offset size field
//	0      8    magic "AVON-KS\n"
//	8      1    format version (1)
//	9      1    KDF id (1 = Argon2id)
//	10     4    Argon2id time (passes)
//	14     4    Argon2id memory (KiB)
//	18     1    Argon2id threads
//	19     32   salt
//	51     32   key check: HMAC-SHA256(check key, "avon kms-soft check\x00" || bytes 0..50)
//	83     12   AES-GCM nonce, fresh on every write
//	95     ...  AES-256-GCM(encryption key, nonce, key set, AAD = bytes 0..94), tag last
//
// KEK = Argon2id(passphrase, salt, time, memory, threads, 32 bytes);
// encryption key = HKDF-SHA256(KEK, info "avon kms-soft v1 file key") and
// check key = HKDF-SHA256(KEK, info "avon kms-soft v1 check key"). The check
// tells a wrong passphrase from a damaged file: a wrong passphrase fails the
// check; a modified nonce, ciphertext or tag passes it and fails GCM. A
// modified salt, KDF parameter or check value derives another KEK and so
// reads as a wrong passphrase: the two cannot be told apart.
const (
	magic       = "AVON-KS\n"
	formatV1    = 1
	kdfArgon2id = 1

	saltOffset  = 19
	checkOffset = 51
	nonceOffset = 83
	headerSize  = 95
	tagSize     = 16

	checkLabel = "avon kms-soft check\x00"
	encInfo    = "avon kms-soft v1 file key"
	checkInfo  = "avon kms-soft v1 check key"

	// maxFileSize bounds what Open reads.
	maxFileSize = 256 << 20
	// KDF ceilings, for new keystores and for headers read from disk (a
	// damaged header must not make Open allocate gigabytes or spin for
	// hours).
	maxKDFTime      = 64
	maxKDFMemoryKiB = 4 << 20
)

// KDFParams are Argon2id parameters.
type KDFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is used for new keystores when Options.KDF is zero.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 2}

// MinKDF is the floor for new keystores: OWASP's Argon2id minimum (19 MiB,
// 2 passes). Only Options.AllowWeakKDF (tests) goes below it.
var MinKDF = KDFParams{Time: 2, MemoryKiB: 19 << 10, Threads: 1}

// TestKDF is a deliberately weak parameter set that keeps tests fast. Open
// accepts it for a new keystore only with Options.AllowWeakKDF; never use
// it for a keystore that holds real keys.
var TestKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// Validate checks p against MinKDF and the ceilings.
func (p KDFParams) Validate() error {
	if err := p.plausible(); err != nil {
		return err
	}
	if p.Time < MinKDF.Time || p.MemoryKiB < MinKDF.MemoryKiB {
		return fmt.Errorf("argon2id parameters t=%d m=%d KiB are below the floor t=%d m=%d KiB", p.Time, p.MemoryKiB, MinKDF.Time, MinKDF.MemoryKiB)
	}
	return nil
}

// plausible checks p against what Argon2id accepts and the ceilings, not
// the floor: existing files keep the parameters they were made with.
func (p KDFParams) plausible() error {
	switch {
	case p.Time < 1 || p.Time > maxKDFTime:
		return fmt.Errorf("argon2id time %d outside 1..%d", p.Time, maxKDFTime)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads must be at least 1")
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB outside %d..%d", p.MemoryKiB, 8*uint32(p.Threads), maxKDFMemoryKiB)
	}
	return nil
}

// fileKeys are derived from the passphrase and held while the keystore is
// open; header is the file header with a zero nonce.
type fileKeys struct {
	enc    []byte
	header [headerSize]byte
	params KDFParams
}

func (k *fileKeys) clear() { clear(k.enc) }

// deriveKeys runs the KDF and builds the header for salt and p.
func deriveKeys(pass, salt []byte, p KDFParams) (*fileKeys, error) {
	kek := argon2.IDKey(pass, salt, p.Time, p.MemoryKiB, p.Threads, 32)
	defer clear(kek)
	enc, err := hkdf.Key(sha256.New, kek, nil, encInfo, 32)
	if err != nil {
		return nil, err
	}
	check, err := hkdf.Key(sha256.New, kek, nil, checkInfo, 32)
	if err != nil {
		clear(enc)
		return nil, err
	}
	defer clear(check)
	fk := &fileKeys{enc: enc, params: p}
	h := fk.header[:]
	copy(h, magic)
	h[8] = formatV1
	h[9] = kdfArgon2id
	binary.BigEndian.PutUint32(h[10:], p.Time)
	binary.BigEndian.PutUint32(h[14:], p.MemoryKiB)
	h[18] = p.Threads
	copy(h[saltOffset:checkOffset], salt)
	mac := hmac.New(sha256.New, check)
	mac.Write([]byte(checkLabel))
	mac.Write(h[:checkOffset])
	mac.Sum(h[checkOffset:checkOffset])
	return fk, nil
}

func (k *fileKeys) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(k.enc)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts a serialized key set into a complete file image under
// nonce (12 bytes, fresh for every write).
func (k *fileKeys) seal(nonce, plaintext []byte) ([]byte, error) {
	if len(nonce) != headerSize-nonceOffset {
		return nil, fmt.Errorf("nonce of %d bytes", len(nonce))
	}
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerSize, headerSize+len(plaintext)+tagSize)
	copy(out, k.header[:])
	copy(out[nonceOffset:], nonce)
	return g.Seal(out, out[nonceOffset:headerSize], plaintext, out[:headerSize]), nil
}

// parseHeader reads and checks the header fields; it never panics. Its
// errors are the detail of an ErrTampered.
func parseHeader(data []byte) (p KDFParams, salt []byte, err error) {
	if len(data) < headerSize+tagSize {
		return p, nil, fmt.Errorf("%d bytes is too short for a keystore", len(data))
	}
	if string(data[:len(magic)]) != magic {
		return p, nil, fmt.Errorf("not a kms-soft keystore (bad magic)")
	}
	if data[8] != formatV1 {
		return p, nil, fmt.Errorf("unsupported keystore format version %d", data[8])
	}
	if data[9] != kdfArgon2id {
		return p, nil, fmt.Errorf("unsupported KDF id %d", data[9])
	}
	p = KDFParams{Time: binary.BigEndian.Uint32(data[10:]), MemoryKiB: binary.BigEndian.Uint32(data[14:]), Threads: data[18]}
	if err := p.plausible(); err != nil {
		return p, nil, err
	}
	return p, data[saltOffset:checkOffset], nil
}

// open decrypts a file image with the keys already derived: the image
// must have been sealed under the same header (magic, format, KDF
// parameters, salt, key check), as every write of one keystore is. Errors
// wrap ErrTampered.
func (k *fileKeys) open(data []byte) ([]byte, error) {
	if _, _, err := parseHeader(data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	if !hmac.Equal(data[:nonceOffset], k.header[:nonceOffset]) {
		return nil, fmt.Errorf("%w: it was replaced by a keystore with another salt, KDF or passphrase (restart with its passphrase)", ErrTampered)
	}
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	pt, err := g.Open(nil, data[nonceOffset:headerSize], data[headerSize:], data[:headerSize])
	if err != nil {
		return nil, fmt.Errorf("%w: the contents do not authenticate", ErrTampered)
	}
	return pt, nil
}

// openFile decrypts a file image with the passphrase. Errors wrap
// ErrTampered or ErrWrongPassphrase.
func openFile(data, pass []byte) (*fileKeys, []byte, error) {
	p, salt, err := parseHeader(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	k, err := deriveKeys(pass, salt, p)
	if err != nil {
		return nil, nil, err
	}
	if !hmac.Equal(k.header[checkOffset:nonceOffset], data[checkOffset:nonceOffset]) {
		k.clear()
		return nil, nil, ErrWrongPassphrase
	}
	g, err := k.aead()
	if err != nil {
		k.clear()
		return nil, nil, err
	}
	pt, err := g.Open(nil, data[nonceOffset:headerSize], data[headerSize:], data[:headerSize])
	if err != nil {
		k.clear()
		return nil, nil, fmt.Errorf("%w: the passphrase is right but the contents do not authenticate", ErrTampered)
	}
	return k, pt, nil
}
