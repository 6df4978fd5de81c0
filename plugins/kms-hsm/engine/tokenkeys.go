package engine

import (
	"context"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"

	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// DER encodings of the curves' OIDs for CKA_EC_PARAMS.
var (
	oidP256    = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07} // 1.2.840.10045.3.1.7
	oidP384    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}                   // 1.3.132.0.34
	oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}                               // 1.3.101.112
)

// gcmTagBits is the GCM tag length of every token encryption.
const gcmTagBits = 128

// objectClass is the class of the private part of a's token object.
func objectClass(a kms.Algorithm) uint {
	if a == kms.AES256 {
		return pkcs11.CKO_SECRET_KEY
	}
	return pkcs11.CKO_PRIVATE_KEY
}

// errMissing marks a token object the metadata names but the token lacks.
func errMissing(what string) error {
	return fmt.Errorf("%s is not on the token (token restored without it, or deleted by hand): %w", what, ErrCorrupt)
}

// handle returns the handle of the one object matching tmpl, cached under
// key.
func (e *Engine) handle(c token.Ctx, sh pkcs11.SessionHandle, key, what string, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if h, ok := e.handles.Load(key); ok {
		return h.(pkcs11.ObjectHandle), nil
	}
	found, err := findObjects(c, sh, tmpl)
	if err != nil {
		return 0, err
	}
	switch len(found) {
	case 0:
		return 0, errMissing(what)
	case 1:
	default:
		return 0, fmt.Errorf("token holds two objects for %s: %w", what, ErrCorrupt)
	}
	e.handles.Store(key, found[0])
	return found[0], nil
}

// objectRef names a token object: by CKA_ID and class, or (the wrap key)
// by label.
type objectRef struct {
	key, what string
	tmpl      []*pkcs11.Attribute
}

func keyObject(ckaID []byte, class uint) objectRef {
	k := objectKey(ckaID)
	return objectRef{key: k, what: "key object " + k, tmpl: []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_ID, ckaID)}}
}

func (e *Engine) wrapObject() objectRef {
	return objectRef{key: "wrap:" + e.wrapLabel, what: fmt.Sprintf("wrap key %q", e.wrapLabel), tmpl: []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, wrapKeyType),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, e.wrapLabel)}}
}

// withObject runs fn with a session and the handle of ref. A handle the
// token no longer knows is looked up again once.
func (e *Engine) withObject(ctx context.Context, ref objectRef, fn func(c token.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error) error {
	return e.tok.Do(ctx, func(c token.Ctx, sh pkcs11.SessionHandle) error {
		for attempt := 0; ; attempt++ {
			h, err := e.handle(c, sh, ref.key, ref.what, ref.tmpl)
			if err != nil {
				return err
			}
			err = fn(c, sh, h)
			if attempt == 0 && (token.Is(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) || token.Is(err, pkcs11.CKR_KEY_HANDLE_INVALID)) {
				e.handles.Delete(ref.key)
				continue
			}
			return err
		}
	})
}

// generateInToken makes the token object of a new version of a classical
// key and returns its CKA_ID and its public key (nil for AES-256).
func (e *Engine) generateInToken(ctx context.Context, a kms.Algorithm, id string, version int) (ckaID, public []byte, err error) {
	ckaID = make([]byte, objectIDLen)
	if _, err := e.rand.Read(ckaID); err != nil {
		return nil, nil, fmt.Errorf("draw object ID: %w", err)
	}
	label := objectLabel(id, version)
	err = e.tok.Do(ctx, func(c token.Ctx, sh pkcs11.SessionHandle) error {
		if a == kms.AES256 {
			h, err := c.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
				append(secretTemplate(ckaID, label), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES)))
			if err != nil {
				return err
			}
			e.handles.Store(objectKey(ckaID), h)
			return nil
		}
		mech, keyType, params := uint(pkcs11.CKM_EC_KEY_PAIR_GEN), uint(pkcs11.CKK_EC), oidP256
		switch a {
		case kms.ECDSAP384:
			params = oidP384
		case kms.Ed25519:
			mech, keyType, params = ckmECEdwardsKeyPairGen, ckkECEdwards, oidEd25519
		}
		pubTmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), // the public key lives in the metadata
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
		}
		privTmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_ID, ckaID),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}
		pub, priv, err := c.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubTmpl, privTmpl)
		if err != nil {
			return err
		}
		defer func() { _ = c.DestroyObject(sh, pub) }()
		attrs, err := c.GetAttributeValue(sh, pub, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err == nil && len(attrs) != 1 {
			err = errors.New("no CKA_EC_POINT")
		}
		if err == nil {
			public, err = ecPoint(a, attrs[0].Value)
		}
		if err != nil {
			_ = c.DestroyObject(sh, priv)
			return fmt.Errorf("read the public key of the new %s key: %w", a, err)
		}
		e.handles.Store(objectKey(ckaID), priv)
		return nil
	})
	if err != nil {
		return nil, nil, tokenErr(fmt.Sprintf("generate %s key %q version %d in the token", a, id, version), err)
	}
	return ckaID, public, nil
}

// ecPoint turns CKA_EC_POINT (a DER OCTET STRING, or the raw point from
// tokens that skip the wrapping) into the raw public key.
func ecPoint(a kms.Algorithm, v []byte) ([]byte, error) {
	want := publicKeySize(a)
	if len(v) == want && (a == kms.Ed25519 || v[0] == 4) {
		return append([]byte(nil), v...), nil
	}
	var raw []byte
	rest, err := asn1.Unmarshal(v, &raw)
	if err != nil || len(rest) != 0 || len(raw) != want || (a != kms.Ed25519 && raw[0] != 4) {
		return nil, fmt.Errorf("CKA_EC_POINT of %d bytes is not a %s point", len(v), a)
	}
	return raw, nil
}

// destroyInToken destroys a version's token object. An object already
// gone is not an error: the goal is that it does not exist.
func (e *Engine) destroyInToken(ctx context.Context, a kms.Algorithm, ckaID []byte) error {
	err := e.withObject(ctx, keyObject(ckaID, objectClass(a)), func(c token.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		return c.DestroyObject(sh, h)
	})
	e.handles.Delete(objectKey(ckaID))
	if errors.Is(err, ErrCorrupt) {
		return nil // not on the token
	}
	return err
}

// signInToken signs with a classical key: ECDSA over the SHA-256/384
// digest (CKM_ECDSA, r || s turned into ASN.1 DER), Ed25519 over the
// message (CKM_EDDSA, pure).
func (e *Engine) signInToken(ctx context.Context, a kms.Algorithm, ckaID, msg []byte) ([]byte, error) {
	var sig []byte
	err := e.withObject(ctx, keyObject(ckaID, pkcs11.CKO_PRIVATE_KEY), func(c token.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		mech, data := uint(pkcs11.CKM_ECDSA), msg
		if a == kms.Ed25519 {
			mech = ckmEdDSA
		} else {
			data = digest(a, msg)
		}
		if err := c.SignInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, h); err != nil {
			return err
		}
		var err error
		sig, err = c.Sign(sh, data)
		return err
	})
	if err != nil {
		return nil, err
	}
	if a == kms.Ed25519 {
		return sig, nil
	}
	return derSignature(a, sig)
}

// derSignature encodes a PKCS#11 ECDSA signature (r || s, each as long as
// the group order) as the ASN.1 SEQUENCE { r INTEGER, s INTEGER }.
func derSignature(a kms.Algorithm, raw []byte) ([]byte, error) {
	c := curveOf(a)
	if c == nil {
		return nil, fmt.Errorf("%s is not ECDSA: %w", a, errdef.ErrInternal)
	}
	n := (c.Params().BitSize + 7) / 8
	if len(raw) != 2*n {
		return nil, fmt.Errorf("token returned a %s signature of %d bytes, want %d: %w", a, len(raw), 2*n, errdef.ErrInternal)
	}
	r, s := new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])
	der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	if err != nil {
		return nil, fmt.Errorf("encode %s signature: %v: %w", a, err, errdef.ErrInternal)
	}
	return der, nil
}

// sealInToken is AES-256-GCM encryption with a token key: iv (12 bytes,
// from the host RNG), 128-bit tag appended.
func (e *Engine) sealInToken(ctx context.Context, ref objectRef, iv, pt, aad []byte) ([]byte, error) {
	var out []byte
	err := e.withObject(ctx, ref, func(c token.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		p := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
		defer p.Free()
		if err := c.EncryptInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, p)}, h); err != nil {
			return err
		}
		var err error
		out, err = c.Encrypt(sh, pt)
		return err
	})
	if err == nil && len(out) != len(pt)+gcmTagBits/8 {
		err = fmt.Errorf("token returned %d bytes of GCM output for %d of input: %w", len(out), len(pt), errdef.ErrInternal)
	}
	return out, err
}

// errAuth marks a GCM open that did not authenticate.
var errAuth = errors.New("does not authenticate")

// openInToken is the inverse of sealInToken. A ciphertext that does not
// authenticate fails with errAuth.
func (e *Engine) openInToken(ctx context.Context, ref objectRef, iv, ct, aad []byte) ([]byte, error) {
	var out []byte
	err := e.withObject(ctx, ref, func(c token.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		p := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
		defer p.Free()
		if err := c.DecryptInit(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, p)}, h); err != nil {
			return err
		}
		var err error
		out, err = c.Decrypt(sh, ct)
		if code, ok := token.Code(err); ok {
			switch code {
			case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, pkcs11.CKR_DATA_INVALID,
				pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED:
				return fmt.Errorf("%w (%v)", errAuth, err)
			}
		}
		return err
	})
	return out, err
}

// tokenErr classifies a token failure: errors that already carry a
// sentinel (a lost PIN, a closed token, a missing object) keep it; the
// rest are internal.
func tokenErr(what string, err error) error {
	var s *errdef.Sentinel
	if errors.As(err, &s) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return token.Internal(what, err)
}
