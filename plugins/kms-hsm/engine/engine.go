// Package engine is kms-hsm's KMS: it implements kms.KMS and
// kms.RandomSource over one PKCS#11 token (plugins/kms-hsm/token) and the
// host's storage.
//
// Classical keys (ECDSA P-256/P-384, Ed25519, AES-256) are generated and
// used inside the token as sensitive, non-extractable private objects. The
// token has no post-quantum mechanisms, so ML-DSA, ML-KEM and X-Wing keys
// are seeds drawn from the host RNG and stored in host storage only
// wrapped (AES-256-GCM inside the token) under a token-resident wrap key;
// each operation unwraps the seed into memory, derives the key, uses it and
// zeroizes both. There is no plaintext fallback: if the wrap key is not
// there, PQ keys do not work. Metadata (IDs, versions, public keys, object
// references, wrapped seeds) lives in host storage, updated by
// compare-and-set; see README.md for the formats.
//
// The engine must not draw randomness from anywhere but Options.Rand for
// what it makes itself (seeds, IVs, object IDs, ML-DSA hedges); keys
// generated inside the token use the token's generator.
package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/pkcs11"

	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
)

// DefaultWrapKeyLabel is the CKA_LABEL of the wrap key unless configured.
const DefaultWrapKeyLabel = "avon-wrap"

// Options configure New.
type Options struct {
	Token   *token.Token // open token; the engine closes it in Close
	Storage host.Storage // the plugin's host storage
	// Rand is the host RNG; reads are serialized, so it need not be safe
	// for concurrent use.
	Rand io.Reader
	// Now is the clock for creation and destruction times (default time.Now).
	Now func() time.Time
	// WrapKeyLabel names the token's AES-256 wrap key (default
	// DefaultWrapKeyLabel). New generates it if the token has none.
	WrapKeyLabel string
	Logger       hclog.Logger
}

// Engine is a KMS over a token. Its methods are safe for concurrent use.
// Every operation reads the key's record from host storage; mutations
// write it back by compare-and-set and retry (a bounded number of times)
// when another writer got there first.
type Engine struct {
	tok       *token.Token
	store     host.Storage
	now       func() time.Time
	log       hclog.Logger
	rand      lockedReader
	wrapLabel string
	edwards   bool // the token can make and use Ed25519 keys

	// handles caches object handles by CKA_ID (string). Handles stay valid
	// for the life of the application's connection to the token; a stale
	// one (CKR_OBJECT_HANDLE_INVALID) is dropped and looked up again.
	handles sync.Map
}

// lockedReader serializes reads of the host RNG and makes each one a
// ReadFull.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return io.ReadFull(l.r, p)
}

// PKCS#11 3.0 values the module's headers predate.
const (
	ckkECEdwards            = 0x00000040
	ckmECEdwardsKeyPairGen  = 0x00001055
	ckmEdDSA                = 0x00001057
	wrapKeyType             = pkcs11.CKK_AES
	wrapKeyLen              = 32
	objectIDLen             = 16
	maxFound                = 2 // FindObjects asks for two to detect duplicates
	maxMutationAttempts     = 16
	objectLabelPrefix       = "avon/"
	objectLabelVersionSplit = "/v"
)

// New checks the token's mechanisms and finds (or, on first use, makes) the
// wrap key. On error the token is left open for the caller to close.
func New(ctx context.Context, o Options) (*Engine, error) {
	if o.Token == nil || o.Storage == nil || o.Rand == nil {
		return nil, errors.New("engine: token, storage and randomness are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.WrapKeyLabel == "" {
		o.WrapKeyLabel = DefaultWrapKeyLabel
	}
	e := &Engine{tok: o.Token, store: o.Storage, now: o.Now, log: o.Logger, rand: lockedReader{r: o.Rand}, wrapLabel: o.WrapKeyLabel}
	for _, m := range []struct {
		mech uint
		name string
	}{{pkcs11.CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"}, {pkcs11.CKM_ECDSA, "CKM_ECDSA"},
		{pkcs11.CKM_AES_KEY_GEN, "CKM_AES_KEY_GEN"}, {pkcs11.CKM_AES_GCM, "CKM_AES_GCM"}} {
		if !o.Token.HasMechanism(m.mech) {
			return nil, fmt.Errorf("token %q lacks %s, which kms-hsm needs", o.Token.Label(), m.name)
		}
	}
	e.edwards = o.Token.HasMechanism(ckmECEdwardsKeyPairGen) && o.Token.HasMechanism(ckmEdDSA)
	if err := e.ensureWrapKey(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Algorithms returns the algorithms this engine can generate.
func (e *Engine) Algorithms() []kms.Algorithm {
	out := make([]kms.Algorithm, 0, len(kms.AllAlgorithms))
	for _, a := range kms.AllAlgorithms {
		if a != kms.Ed25519 || e.edwards {
			out = append(out, a)
		}
	}
	return out
}

// Close closes the token's sessions. Later calls fail with
// kms.ErrKeystoreLocked.
func (e *Engine) Close() error { return e.tok.Close() }

// ensureWrapKey finds the wrap key by label or generates it.
func (e *Engine) ensureWrapKey(ctx context.Context) error {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, wrapKeyType),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, e.wrapLabel),
	}
	return e.tok.Do(ctx, func(c token.Ctx, sh pkcs11.SessionHandle) error {
		found, err := findObjects(c, sh, tmpl)
		if err != nil {
			return err
		}
		switch len(found) {
		case 1:
			return e.checkWrapKey(c, sh, found[0])
		case 0:
		default:
			return fmt.Errorf("token %q holds more than one key labelled %q; kms-hsm cannot tell which wraps its seeds", e.tok.Label(), e.wrapLabel)
		}
		_, err = c.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
			append(secretTemplate([]byte(e.wrapLabel), e.wrapLabel), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, wrapKeyType)))
		if err != nil {
			return fmt.Errorf("generate wrap key %q: %w", e.wrapLabel, err)
		}
		e.log.Info("generated wrap key in the token", "token", e.tok.Label(), "label", e.wrapLabel)
		return nil
	})
}

// checkWrapKey refuses a wrap key that is not an AES-256, sensitive,
// non-extractable token key that may encrypt and decrypt.
func (e *Engine) checkWrapKey(c token.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
	attrs, err := c.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil)})
	if err != nil {
		return fmt.Errorf("read wrap key %q attributes: %w", e.wrapLabel, err)
	}
	vals := map[uint][]byte{}
	for _, a := range attrs {
		vals[a.Type] = a.Value
	}
	isTrue := func(t uint) bool { v := vals[t]; return len(v) == 1 && v[0] != 0 }
	if n := ulong(vals[pkcs11.CKA_VALUE_LEN]); n != wrapKeyLen || !isTrue(pkcs11.CKA_SENSITIVE) || isTrue(pkcs11.CKA_EXTRACTABLE) ||
		!isTrue(pkcs11.CKA_ENCRYPT) || !isTrue(pkcs11.CKA_DECRYPT) || !isTrue(pkcs11.CKA_TOKEN) {
		return fmt.Errorf("wrap key %q on token %q must be a 32-byte AES token key, sensitive, not extractable, allowed to encrypt and decrypt", e.wrapLabel, e.tok.Label())
	}
	return nil
}

func ulong(b []byte) uint64 {
	var n uint64
	if len(b) == 0 || len(b) > 8 {
		return 0
	}
	// CK_ULONG in host byte order: little-endian on every platform we build for.
	for i := len(b) - 1; i >= 0; i-- {
		n = n<<8 | uint64(b[i])
	}
	return n
}

// secretTemplate is the template of a sensitive, non-extractable AES-256
// token key that encrypts and decrypts.
func secretTemplate(id []byte, label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, wrapKeyLen),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
}

// findObjects returns the handles matching tmpl, at most maxFound.
func findObjects(c token.Ctx, sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := c.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	found, _, err := c.FindObjects(sh, maxFound)
	if ferr := c.FindObjectsFinal(sh); err == nil && ferr != nil {
		err = ferr
	}
	return found, err
}

// objectLabel is the CKA_LABEL of a key version's token object: it names
// the key and the version for operators listing the token.
func objectLabel(id string, version int) string {
	return fmt.Sprintf("%s%s%s%d", objectLabelPrefix, id, objectLabelVersionSplit, version)
}

func objectKey(ckaID []byte) string { return hex.EncodeToString(ckaID) }
