package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
)

// File layout, version 1 (all integers big-endian):
//
//	offset size field
//	0      8    magic "AVONKS1\n"
//	8      1    format version (1)
//	9      1    KDF id (1 = Argon2id)
//	10     4    Argon2id time (passes)
//	14     4    Argon2id memory (KiB)
//	18     1    Argon2id threads
//	19     32   salt
//	51     32   key check: HMAC-SHA256(check key, "avon kms-soft check v1")
//	83     12   AES-GCM nonce
//	95     ...  AES-256-GCM(encryption key, nonce, key set JSON, AAD = bytes 0..94)
//
// KEK = Argon2id(passphrase, salt); encryption key and check key are
// HKDF-SHA256(KEK, info "avon kms-soft enc v1" / "avon kms-soft check v1").
// The check tells a wrong passphrase from a tampered file: a wrong
// passphrase fails the check, a tampered file passes it and fails GCM.
const (
	magic        = "AVONKS1\n"
	formatV1     = 1
	kdfArgon2id  = 1
	headerSize   = 95
	saltOffset   = 19
	checkOffset  = 51
	nonceOffset  = 83
	maxFileSize  = 256 << 20
	checkMessage = "avon kms-soft check v1"
)

// KDFParams are Argon2id parameters.
type KDFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is used for new keystores unless configured otherwise.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 2}

// MinKDF is the floor for new keystores (OWASP's Argon2id minimum:
// 19 MiB, 2 passes).
var MinKDF = KDFParams{Time: 2, MemoryKiB: 19 << 10, Threads: 1}

// Validate checks p against the floor and sane ceilings.
func (p KDFParams) Validate() error {
	switch {
	case p.Time < MinKDF.Time || p.Time > 100:
		return fmt.Errorf("argon2id time %d outside %d..100", p.Time, MinKDF.Time)
	case p.MemoryKiB < MinKDF.MemoryKiB || p.MemoryKiB > 4<<20:
		return fmt.Errorf("argon2id memory %d KiB outside %d..%d", p.MemoryKiB, MinKDF.MemoryKiB, 4<<20)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads must be at least 1")
	}
	return nil
}

// keys derived from the passphrase, held while the keystore is open.
type fileKeys struct {
	enc, check []byte
	header     [headerSize]byte // without nonce filled; salt and params fixed
}

func (k *fileKeys) clear() { clear(k.enc); clear(k.check) }

func deriveKeys(pass []byte, salt []byte, p KDFParams) (*fileKeys, error) {
	kek := argon2.IDKey(pass, salt, p.Time, p.MemoryKiB, p.Threads, 32)
	defer clear(kek)
	enc, err := hkdf.Key(sha256.New, kek, nil, "avon kms-soft enc v1", 32)
	if err != nil {
		return nil, err
	}
	check, err := hkdf.Key(sha256.New, kek, nil, checkMessage, 32)
	if err != nil {
		clear(enc)
		return nil, err
	}
	fk := &fileKeys{enc: enc, check: check}
	h := fk.header[:]
	copy(h, magic)
	h[8] = formatV1
	h[9] = kdfArgon2id
	binary.BigEndian.PutUint32(h[10:], p.Time)
	binary.BigEndian.PutUint32(h[14:], p.MemoryKiB)
	h[18] = p.Threads
	copy(h[saltOffset:], salt)
	mac := hmac.New(sha256.New, check)
	mac.Write([]byte(checkMessage))
	copy(h[checkOffset:], mac.Sum(nil))
	return fk, nil
}

// seal encrypts plaintext into a complete file image.
func (k *fileKeys) seal(rnd io.Reader, plaintext []byte) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+len(plaintext)+16)
	copy(out, k.header[:])
	if _, err := io.ReadFull(rnd, out[nonceOffset:headerSize]); err != nil {
		return nil, fmt.Errorf("keystore nonce: %w", err)
	}
	block, err := aes.NewCipher(k.enc)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return gcm.Seal(out, out[nonceOffset:headerSize], plaintext, out[:headerSize]), nil
}

// parseHeader reads the header fields; it never panics.
func parseHeader(data []byte) (p KDFParams, salt []byte, err error) {
	if len(data) < headerSize+16 {
		return p, nil, fmt.Errorf("file of %d bytes is too short", len(data))
	}
	if string(data[:8]) != magic {
		return p, nil, errors.New("not a kms-soft keystore (bad magic)")
	}
	if data[8] != formatV1 {
		return p, nil, fmt.Errorf("unsupported keystore format version %d", data[8])
	}
	if data[9] != kdfArgon2id {
		return p, nil, fmt.Errorf("unsupported KDF id %d", data[9])
	}
	p = KDFParams{Time: binary.BigEndian.Uint32(data[10:]), MemoryKiB: binary.BigEndian.Uint32(data[14:]), Threads: data[18]}
	// Existing files may not ask for more than the ceiling (a tampered
	// header must not make us allocate gigabytes).
	if p.Time < 1 || p.Time > 100 || p.MemoryKiB < 8 || p.MemoryKiB > 4<<20 || p.Threads < 1 {
		return p, nil, fmt.Errorf("implausible KDF parameters t=%d m=%d p=%d", p.Time, p.MemoryKiB, p.Threads)
	}
	return p, data[saltOffset:checkOffset], nil
}

// open decrypts a file image with the passphrase.
func open(data, pass []byte) (*fileKeys, []byte, error) {
	p, salt, err := parseHeader(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%v: %w", err, ErrTampered)
	}
	k, err := deriveKeys(pass, salt, p)
	if err != nil {
		return nil, nil, err
	}
	if !hmac.Equal(k.header[checkOffset:nonceOffset], data[checkOffset:nonceOffset]) {
		k.clear()
		return nil, nil, ErrWrongPassphrase
	}
	block, err := aes.NewCipher(k.enc)
	if err != nil {
		k.clear()
		return nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		k.clear()
		return nil, nil, err
	}
	pt, err := gcm.Open(nil, data[nonceOffset:headerSize], data[headerSize:], data[:headerSize])
	if err != nil {
		k.clear()
		return nil, nil, fmt.Errorf("authentication failed: %w", ErrTampered)
	}
	return k, pt, nil
}
