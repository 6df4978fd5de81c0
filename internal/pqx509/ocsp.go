package pqx509

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// OCSPResponseStatus is the outer status of an OCSP response (RFC 6960).
type OCSPResponseStatus int

// Response statuses. Only Successful responses carry a signed body.
const (
	OCSPSuccessful       OCSPResponseStatus = 0
	OCSPMalformedRequest OCSPResponseStatus = 1
	OCSPInternalError    OCSPResponseStatus = 2
	OCSPTryLater         OCSPResponseStatus = 3
	OCSPSigRequired      OCSPResponseStatus = 5
	OCSPUnauthorized     OCSPResponseStatus = 6
)

// OCSPCertStatus is the status of one certificate.
type OCSPCertStatus int

// Certificate statuses, numbered as the CertStatus CHOICE tags.
const (
	OCSPGood    OCSPCertStatus = 0
	OCSPRevoked OCSPCertStatus = 1
	OCSPUnknown OCSPCertStatus = 2
)

// nonce bounds: what we send (RFC 8954: 1-32 octets) and what we accept.
const (
	maxNonceCreate = 32
	maxNonceParse  = 128
)

// CertID names a certificate by hashes of its issuer's name and key and
// its serial. HashAlgorithm is crypto.SHA1 or crypto.SHA256.
type CertID struct {
	HashAlgorithm  crypto.Hash
	IssuerNameHash []byte
	IssuerKeyHash  []byte
	SerialNumber   *big.Int
}

func hashOID(h crypto.Hash) (asn1.ObjectIdentifier, bool) {
	switch h {
	case crypto.SHA1:
		return oidSHA1, true
	case crypto.SHA256:
		return oidSHA256, true
	}
	return nil, false
}

func hashBytes(h crypto.Hash, b []byte) []byte {
	if h == crypto.SHA1 {
		s := sha1.Sum(b)
		return s[:]
	}
	s := sha256.Sum256(b)
	return s[:]
}

// NewCertID computes the CertID of serial issued by issuer: the hash of
// the issuer's DER subject and of its subjectPublicKey BIT STRING value.
func NewCertID(issuer *Certificate, serial *big.Int, h crypto.Hash) (CertID, error) {
	if issuer == nil {
		return CertID{}, fmt.Errorf("pqx509: cert ID: nil issuer: %w", ErrInvalidTemplate)
	}
	if _, ok := hashOID(h); !ok {
		return CertID{}, fmt.Errorf("pqx509: cert ID hash %v: %w", h, ErrUnsupportedAlgorithm)
	}
	if err := checkSerial(serial); err != nil {
		return CertID{}, fmt.Errorf("pqx509: cert ID: %w", err)
	}
	return CertID{HashAlgorithm: h, IssuerNameHash: hashBytes(h, issuer.RawSubject),
		IssuerKeyHash: hashBytes(h, issuer.PublicKey.Raw), SerialNumber: new(big.Int).Set(serial)}, nil
}

// Matches reports whether id names serial issued by issuer.
func (id CertID) Matches(issuer *Certificate, serial *big.Int) bool {
	if issuer == nil || serial == nil || id.SerialNumber == nil {
		return false
	}
	if _, ok := hashOID(id.HashAlgorithm); !ok {
		return false
	}
	return id.SerialNumber.Cmp(serial) == 0 &&
		bytes.Equal(id.IssuerNameHash, hashBytes(id.HashAlgorithm, issuer.RawSubject)) &&
		bytes.Equal(id.IssuerKeyHash, hashBytes(id.HashAlgorithm, issuer.PublicKey.Raw))
}

func (id CertID) check() error {
	if _, ok := hashOID(id.HashAlgorithm); !ok {
		return fmt.Errorf("cert ID hash %v: %w", id.HashAlgorithm, ErrUnsupportedAlgorithm)
	}
	if len(id.IssuerNameHash) != id.HashAlgorithm.Size() || len(id.IssuerKeyHash) != id.HashAlgorithm.Size() {
		return fmt.Errorf("cert ID hash lengths: %w", ErrInvalidTemplate)
	}
	return checkSerial(id.SerialNumber)
}

// addCertID writes a CertID; the hash AlgorithmIdentifier carries NULL
// parameters, as deployed clients and responders write it.
func addCertID(b *cryptobyte.Builder, id CertID) {
	oid, _ := hashOID(id.HashAlgorithm)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1NULL()
		})
		b.AddASN1OctetString(id.IssuerNameHash)
		b.AddASN1OctetString(id.IssuerKeyHash)
		b.AddASN1BigInt(id.SerialNumber)
	})
}

// readCertID reads a CertID; hash parameters may be NULL or absent.
func readCertID(s *cryptobyte.String, what string) (CertID, error) {
	var id CertID
	var seq, alg, nameHash, keyHash cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1(&alg, cbasn1.SEQUENCE) {
		return id, malformed(what)
	}
	oid, err := readOID(&alg, what+": hashAlgorithm")
	if err != nil {
		return id, err
	}
	switch {
	case oid.Equal(oidSHA1):
		id.HashAlgorithm = crypto.SHA1
	case oid.Equal(oidSHA256):
		id.HashAlgorithm = crypto.SHA256
	default:
		return id, perr(what+": hashAlgorithm "+oid.String(), ErrUnsupportedAlgorithm)
	}
	if alg.PeekASN1Tag(cbasn1.NULL) && !alg.ReadASN1(new(cryptobyte.String), cbasn1.NULL) {
		return id, malformed(what + ": hashAlgorithm parameters")
	}
	if !alg.Empty() {
		return id, perr(what+": hashAlgorithm parameters", ErrBadParameters)
	}
	if !seq.ReadASN1(&nameHash, cbasn1.OCTET_STRING) || !seq.ReadASN1(&keyHash, cbasn1.OCTET_STRING) ||
		len(nameHash) != id.HashAlgorithm.Size() || len(keyHash) != id.HashAlgorithm.Size() {
		return id, malformed(what + ": hashes")
	}
	id.IssuerNameHash, id.IssuerKeyHash = bytes.Clone(nameHash), bytes.Clone(keyHash)
	if id.SerialNumber, err = readSerial(&seq, what+": serialNumber"); err != nil {
		return id, err
	}
	if !seq.Empty() {
		return id, malformed(what)
	}
	return id, nil
}

func nonceExtension(nonce []byte) (pkix.Extension, error) {
	if len(nonce) == 0 || len(nonce) > maxNonceCreate {
		return pkix.Extension{}, fmt.Errorf("nonce of %d bytes, want 1-%d: %w", len(nonce), maxNonceCreate, ErrInvalidTemplate)
	}
	v, err := marshalOctets(nonce)
	return pkix.Extension{Id: oidOCSPNonce, Value: v}, err
}

// readOCSPExtensions reads an explicitly tagged Extensions, pulls out the
// nonce, and refuses duplicates and unknown critical extensions.
func readOCSPExtensions(el cryptobyte.String, what string) (exts []pkix.Extension, nonce []byte, err error) {
	var seq cryptobyte.String
	if !el.ReadASN1(&seq, cbasn1.SEQUENCE) || !el.Empty() {
		return nil, nil, malformed(what)
	}
	exts, dup, err := readExtensions(seq, what)
	if err != nil {
		return nil, nil, err
	}
	if dup != nil {
		return nil, nil, perr(what+": "+dup.String(), ErrDuplicateExtension)
	}
	for _, e := range exts {
		switch {
		case e.Id.Equal(oidOCSPNonce):
			err := parseOnly(e.Value, what+": nonce", func(s *cryptobyte.String) error {
				var v cryptobyte.String
				if !s.ReadASN1(&v, cbasn1.OCTET_STRING) || len(v) == 0 || len(v) > maxNonceParse {
					return malformed(what + ": nonce")
				}
				nonce = bytes.Clone(v)
				return nil
			})
			if err != nil {
				return nil, nil, err
			}
		default:
			if e.Critical {
				return nil, nil, perr(what+": "+e.Id.String(), ErrUnknownCriticalExtension)
			}
		}
	}
	return exts, nonce, nil
}

// ---- requests ----

// OCSPRequest is a parsed OCSP request. A request signature is exposed,
// not checked.
type OCSPRequest struct {
	Raw           []byte
	RawTBSRequest []byte
	// RequestorName is the raw GeneralName, if any.
	RequestorName []byte
	CertIDs       []CertID
	Nonce         []byte
	Extensions    []pkix.Extension

	Signed                bool
	RawSignatureAlgorithm []byte
	Signature             []byte
}

// CreateOCSPRequest builds an unsigned request for serials issued by
// issuer, with CertIDs hashed by hash (crypto.SHA1 or crypto.SHA256) and
// an optional nonce (1-32 bytes).
func CreateOCSPRequest(issuer *Certificate, serials []*big.Int, hash crypto.Hash, nonce []byte) ([]byte, error) {
	if len(serials) == 0 {
		return nil, fmt.Errorf("pqx509: OCSP request: no serials: %w", ErrInvalidTemplate)
	}
	ids := make([]CertID, 0, len(serials))
	for _, s := range serials {
		id, err := NewCertID(issuer, s, hash)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	var exts []pkix.Extension
	if nonce != nil {
		e, err := nonceExtension(nonce)
		if err != nil {
			return nil, fmt.Errorf("pqx509: OCSP request: %w", err)
		}
		exts = append(exts, e)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, id := range ids {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addCertID(b, id) })
				}
			})
			if len(exts) > 0 {
				b.AddASN1(cbasn1.Tag(2).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addExtensions(b, exts) })
				})
			}
		})
	})
	return build(&b)
}

// ParseOCSPRequest parses one strict-DER OCSP request.
func ParseOCSPRequest(der []byte) (*OCSPRequest, error) {
	const what = "OCSP request"
	input := cryptobyte.String(der)
	var outer, tbsEl, tbs cryptobyte.String
	if !input.ReadASN1(&outer, cbasn1.SEQUENCE) || !input.Empty() || !outer.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) {
		return nil, malformed(what)
	}
	r := &OCSPRequest{Raw: bytes.Clone(der), RawTBSRequest: bytes.Clone(tbsEl)}
	if !tbsEl.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return nil, malformed(what)
	}
	if tbs.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, malformed(what + ": version (DEFAULT v1 encoded)")
	}
	var name cryptobyte.String
	var hasName bool
	if !tbs.ReadOptionalASN1(&name, &hasName, cbasn1.Tag(1).ContextSpecific().Constructed()) {
		return nil, malformed(what + ": requestorName")
	}
	if hasName {
		var err error
		if r.RequestorName, err = rawElement(&name, what+": requestorName"); err != nil || !name.Empty() {
			return nil, malformed(what + ": requestorName")
		}
	}
	var list cryptobyte.String
	if !tbs.ReadASN1(&list, cbasn1.SEQUENCE) || list.Empty() {
		return nil, malformed(what + ": requestList")
	}
	for !list.Empty() {
		var req cryptobyte.String
		if !list.ReadASN1(&req, cbasn1.SEQUENCE) {
			return nil, malformed(what + ": request")
		}
		id, err := readCertID(&req, what+": reqCert")
		if err != nil {
			return nil, err
		}
		var ext cryptobyte.String
		var hasExt bool
		if !req.ReadOptionalASN1(&ext, &hasExt, cbasn1.Tag(0).ContextSpecific().Constructed()) || !req.Empty() {
			return nil, malformed(what + ": request")
		}
		if hasExt {
			if _, _, err := readOCSPExtensions(ext, what+": singleRequestExtensions"); err != nil {
				return nil, err
			}
		}
		r.CertIDs = append(r.CertIDs, id)
	}
	var ext cryptobyte.String
	var hasExt bool
	if !tbs.ReadOptionalASN1(&ext, &hasExt, cbasn1.Tag(2).ContextSpecific().Constructed()) || !tbs.Empty() {
		return nil, malformed(what + ": requestExtensions")
	}
	if hasExt {
		var err error
		if r.Extensions, r.Nonce, err = readOCSPExtensions(ext, what+": requestExtensions"); err != nil {
			return nil, err
		}
	}
	var sigEl cryptobyte.String
	if !outer.ReadOptionalASN1(&sigEl, &r.Signed, cbasn1.Tag(0).ContextSpecific().Constructed()) || !outer.Empty() {
		return nil, malformed(what + ": optionalSignature")
	}
	if r.Signed {
		var sig, alg cryptobyte.String
		if !sigEl.ReadASN1(&sig, cbasn1.SEQUENCE) || !sigEl.Empty() || !sig.ReadASN1Element(&alg, cbasn1.SEQUENCE) {
			return nil, malformed(what + ": signature")
		}
		r.RawSignatureAlgorithm = bytes.Clone(alg)
		var err error
		if r.Signature, err = readBitStringBytes(&sig, what+": signature"); err != nil {
			return nil, err
		}
		if sig.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific().Constructed()) && !sig.SkipASN1(cbasn1.Tag(0).ContextSpecific().Constructed()) {
			return nil, malformed(what + ": signature certs")
		}
		if !sig.Empty() {
			return nil, malformed(what + ": signature")
		}
	}
	return r, nil
}

// ---- responses ----

// OCSPSingleResponse is the status of one certificate. RevokedAt and
// RevocationReason (a CRLReason; 0 is written as absent) apply to
// OCSPRevoked only; NextUpdate is optional.
type OCSPSingleResponse struct {
	CertID           CertID
	Status           OCSPCertStatus
	RevokedAt        time.Time
	RevocationReason int
	ThisUpdate       time.Time
	NextUpdate       time.Time
}

// OCSPResponseTemplate describes a basic OCSP response.
type OCSPResponseTemplate struct {
	ProducedAt time.Time
	Responses  []OCSPSingleResponse
	// Nonce echoes the request's nonce (1-32 bytes) when non-empty.
	Nonce []byte
	// ResponderCert is the delegated responder (issued by the issuer, with
	// the OCSPSigning extended key usage), included in the response. Nil
	// means the issuer signs.
	ResponderCert *Certificate
	// ResponderIDByKey names the responder by the SHA-1 of its key instead
	// of by its subject name.
	ResponderIDByKey bool
}

// OCSPResponse is a parsed OCSP response. For a Status other than
// OCSPSuccessful only Raw and Status are set.
type OCSPResponse struct {
	Raw                []byte
	Status             OCSPResponseStatus
	RawTBSResponseData []byte
	// One of RawResponderName (DER Name) and ResponderKeyHash is set.
	RawResponderName   []byte
	ResponderKeyHash   []byte
	ProducedAt         time.Time
	Responses          []OCSPSingleResponse
	Nonce              []byte
	Extensions         []pkix.Extension
	Certificates       []*Certificate
	SignatureAlgorithm string
	Signature          []byte
}

// CreateOCSPErrorResponse returns an unsigned response with an error
// status (malformedRequest, internalError, tryLater, sigRequired,
// unauthorized).
func CreateOCSPErrorResponse(status OCSPResponseStatus) ([]byte, error) {
	switch status {
	case OCSPMalformedRequest, OCSPInternalError, OCSPTryLater, OCSPSigRequired, OCSPUnauthorized:
	default:
		return nil, fmt.Errorf("pqx509: OCSP error status %d: %w", status, ErrInvalidTemplate)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1Enum(int64(status)) })
	return build(&b)
}

func keyHashSHA1(k PublicKey) []byte {
	h := sha1.Sum(k.Raw)
	return h[:]
}

// CreateOCSPResponse builds and signs a successful basic response about
// certificates issued by issuer. The signer holds the responder's key:
// issuer's, or tmpl.ResponderCert's. It checks its own signature before
// returning the DER.
func CreateOCSPResponse(ctx context.Context, tmpl OCSPResponseTemplate, issuer *Certificate, signer Signer) ([]byte, error) {
	if issuer == nil || signer == nil {
		return nil, fmt.Errorf("pqx509: OCSP response: nil issuer or signer: %w", ErrInvalidTemplate)
	}
	responder := issuer
	var certs []*Certificate
	if tmpl.ResponderCert != nil && !tmpl.ResponderCert.Equal(issuer) {
		responder = tmpl.ResponderCert
		if err := checkDelegatedResponder(responder, issuer, DefaultVerifier); err != nil {
			return nil, err
		}
		certs = append(certs, responder)
	}
	if !signer.Public().Equal(responder.PublicKey) {
		return nil, fmt.Errorf("pqx509: OCSP response: signer is not the responder: %w", ErrSignerMismatch)
	}
	if len(tmpl.Responses) == 0 || tmpl.ProducedAt.IsZero() || !timeEncodable(tmpl.ProducedAt) {
		return nil, fmt.Errorf("pqx509: OCSP response: producedAt and at least one response required: %w", ErrInvalidTemplate)
	}
	for _, r := range tmpl.Responses {
		if err := r.CertID.check(); err != nil {
			return nil, fmt.Errorf("pqx509: OCSP response: %w", err)
		}
		bad := r.ThisUpdate.IsZero() || !timeEncodable(r.ThisUpdate) ||
			(!r.NextUpdate.IsZero() && (!r.NextUpdate.After(r.ThisUpdate) || !timeEncodable(r.NextUpdate)))
		switch r.Status {
		case OCSPGood, OCSPUnknown:
		case OCSPRevoked:
			bad = bad || r.RevokedAt.IsZero() || !timeEncodable(r.RevokedAt) || r.RevocationReason < 0 ||
				r.RevocationReason > 10 || r.RevocationReason == 7
		default:
			bad = true
		}
		if bad {
			return nil, fmt.Errorf("pqx509: OCSP response for serial %v: %w", r.CertID.SerialNumber, ErrInvalidTemplate)
		}
	}
	var exts []pkix.Extension
	if len(tmpl.Nonce) > 0 {
		e, err := nonceExtension(tmpl.Nonce)
		if err != nil {
			return nil, fmt.Errorf("pqx509: OCSP response: %w", err)
		}
		exts = append(exts, e)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if tmpl.ResponderIDByKey {
			b.AddASN1(cbasn1.Tag(2).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(keyHashSHA1(responder.PublicKey))
			})
		} else {
			b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { b.AddBytes(responder.RawSubject) })
		}
		addGeneralizedTime(b, tmpl.ProducedAt)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, r := range tmpl.Responses {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					addCertID(b, r.CertID)
					switch r.Status {
					case OCSPGood:
						b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {})
					case OCSPUnknown:
						b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {})
					case OCSPRevoked:
						b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
							addGeneralizedTime(b, r.RevokedAt)
							if r.RevocationReason != 0 {
								b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
									b.AddASN1Enum(int64(r.RevocationReason))
								})
							}
						})
					}
					addGeneralizedTime(b, r.ThisUpdate)
					if !r.NextUpdate.IsZero() {
						b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
							addGeneralizedTime(b, r.NextUpdate)
						})
					}
				})
			}
		})
		if len(exts) > 0 {
			b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addExtensions(b, exts) })
			})
		}
	})
	tbs, err := build(&b)
	if err != nil {
		return nil, fmt.Errorf("pqx509: OCSP response: %w", err)
	}
	sig, err := sign(ctx, signer, tbs)
	if err != nil {
		return nil, err
	}
	sigName := keyAlgs[responder.PublicKey.Algorithm].sigAlg
	var basic cryptobyte.Builder
	basic.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addSigAlg(b, sigName)
		addBitStringBytes(b, sig)
		if len(certs) > 0 {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, c := range certs {
						b.AddBytes(c.Raw)
					}
				})
			})
		}
	})
	basicDER, err := build(&basic)
	if err != nil {
		return nil, err
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Enum(int64(OCSPSuccessful))
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidOCSPBasic)
				b.AddASN1OctetString(basicDER)
			})
		})
	})
	der, err := build(&out)
	if err != nil {
		return nil, err
	}
	resp, err := ParseOCSPResponse(der)
	if err != nil {
		return nil, fmt.Errorf("pqx509: created OCSP response does not parse: %w", err)
	}
	if err := resp.CheckSignatureFrom(issuer, DefaultVerifier); err != nil {
		return nil, fmt.Errorf("pqx509: created OCSP response does not verify: %w", err)
	}
	return der, nil
}

func checkDelegatedResponder(responder, issuer *Certificate, v Verifier) error {
	if !bytes.Equal(responder.RawIssuer, issuer.RawSubject) {
		return fmt.Errorf("pqx509: OCSP responder not issued by the issuer: %w", ErrNotAuthorized)
	}
	if !hasEKU(responder, x509.ExtKeyUsageOCSPSigning) {
		return fmt.Errorf("pqx509: OCSP responder lacks the OCSPSigning extended key usage: %w", ErrNotAuthorized)
	}
	if err := responder.CheckSignatureFrom(issuer, v); err != nil {
		return fmt.Errorf("pqx509: OCSP responder certificate: %w", err)
	}
	return nil
}

// ParseOCSPResponse parses one strict-DER OCSP response. A response with an
// error status parses without error; its Status says so.
func ParseOCSPResponse(der []byte) (*OCSPResponse, error) {
	const what = "OCSP response"
	input := cryptobyte.String(der)
	var outer cryptobyte.String
	var status int
	if !input.ReadASN1(&outer, cbasn1.SEQUENCE) || !input.Empty() || !outer.ReadASN1Enum(&status) {
		return nil, malformed(what)
	}
	r := &OCSPResponse{Raw: bytes.Clone(der), Status: OCSPResponseStatus(status)}
	switch r.Status {
	case OCSPSuccessful:
	case OCSPMalformedRequest, OCSPInternalError, OCSPTryLater, OCSPSigRequired, OCSPUnauthorized:
		if !outer.Empty() {
			return nil, malformed(what + ": body with an error status")
		}
		return r, nil
	default:
		return nil, malformed(what + ": responseStatus")
	}
	var rb, rbSeq, body cryptobyte.String
	if !outer.ReadASN1(&rb, cbasn1.Tag(0).ContextSpecific().Constructed()) || !outer.Empty() ||
		!rb.ReadASN1(&rbSeq, cbasn1.SEQUENCE) || !rb.Empty() {
		return nil, malformed(what + ": responseBytes")
	}
	typ, err := readOID(&rbSeq, what+": responseType")
	if err != nil {
		return nil, err
	}
	if !typ.Equal(oidOCSPBasic) {
		return nil, perr(what+": responseType "+typ.String(), ErrUnsupportedAlgorithm)
	}
	if !rbSeq.ReadASN1(&body, cbasn1.OCTET_STRING) || !rbSeq.Empty() {
		return nil, malformed(what + ": response")
	}
	var basic, tbsEl, tbs cryptobyte.String
	if !body.ReadASN1(&basic, cbasn1.SEQUENCE) || !body.Empty() || !basic.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) {
		return nil, malformed(what + ": BasicOCSPResponse")
	}
	r.RawTBSResponseData = bytes.Clone(tbsEl)
	if !tbsEl.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return nil, malformed(what + ": tbsResponseData")
	}
	if tbs.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, malformed(what + ": version (DEFAULT v1 encoded)")
	}
	var rid cryptobyte.String
	switch {
	case tbs.PeekASN1Tag(cbasn1.Tag(1).ContextSpecific().Constructed()) && tbs.ReadASN1(&rid, cbasn1.Tag(1).ContextSpecific().Constructed()):
		if r.RawResponderName, err = rawElement(&rid, what+": responderID byName"); err != nil || !rid.Empty() {
			return nil, malformed(what + ": responderID byName")
		}
		if _, err := parseName(r.RawResponderName, what+": responderID byName"); err != nil {
			return nil, err
		}
	case tbs.PeekASN1Tag(cbasn1.Tag(2).ContextSpecific().Constructed()) && tbs.ReadASN1(&rid, cbasn1.Tag(2).ContextSpecific().Constructed()):
		var h cryptobyte.String
		if !rid.ReadASN1(&h, cbasn1.OCTET_STRING) || !rid.Empty() || len(h) != sha1.Size {
			return nil, malformed(what + ": responderID byKey")
		}
		r.ResponderKeyHash = bytes.Clone(h)
	default:
		return nil, malformed(what + ": responderID")
	}
	if r.ProducedAt, err = readGeneralizedTime(&tbs, what+": producedAt"); err != nil {
		return nil, err
	}
	var list cryptobyte.String
	if !tbs.ReadASN1(&list, cbasn1.SEQUENCE) || list.Empty() {
		return nil, malformed(what + ": responses")
	}
	for !list.Empty() {
		sr, err := readSingleResponse(&list)
		if err != nil {
			return nil, err
		}
		r.Responses = append(r.Responses, sr)
	}
	var ext cryptobyte.String
	var hasExt bool
	if !tbs.ReadOptionalASN1(&ext, &hasExt, cbasn1.Tag(1).ContextSpecific().Constructed()) || !tbs.Empty() {
		return nil, malformed(what + ": responseExtensions")
	}
	if hasExt {
		if r.Extensions, r.Nonce, err = readOCSPExtensions(ext, what+": responseExtensions"); err != nil {
			return nil, err
		}
	}
	if _, r.SignatureAlgorithm, err = readSigAlg(&basic, what+": signatureAlgorithm"); err != nil {
		return nil, err
	}
	if r.Signature, err = readBitStringBytes(&basic, what+": signature"); err != nil {
		return nil, err
	}
	var certsEl cryptobyte.String
	var hasCerts bool
	if !basic.ReadOptionalASN1(&certsEl, &hasCerts, cbasn1.Tag(0).ContextSpecific().Constructed()) || !basic.Empty() {
		return nil, malformed(what + ": certs")
	}
	if hasCerts {
		var seq cryptobyte.String
		if !certsEl.ReadASN1(&seq, cbasn1.SEQUENCE) || !certsEl.Empty() {
			return nil, malformed(what + ": certs")
		}
		for !seq.Empty() {
			var el cryptobyte.String
			if !seq.ReadASN1Element(&el, cbasn1.SEQUENCE) {
				return nil, malformed(what + ": certs")
			}
			c, err := ParseCertificate(el)
			if err != nil {
				return nil, err
			}
			r.Certificates = append(r.Certificates, c)
		}
	}
	return r, nil
}

func readSingleResponse(list *cryptobyte.String) (OCSPSingleResponse, error) {
	const what = "OCSP response: singleResponse"
	var sr OCSPSingleResponse
	var s cryptobyte.String
	if !list.ReadASN1(&s, cbasn1.SEQUENCE) {
		return sr, malformed(what)
	}
	var err error
	if sr.CertID, err = readCertID(&s, what+": certID"); err != nil {
		return sr, err
	}
	var v cryptobyte.String
	switch {
	case s.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific()) && s.ReadASN1(&v, cbasn1.Tag(0).ContextSpecific()):
		sr.Status = OCSPGood
		if !v.Empty() {
			return sr, malformed(what + ": good")
		}
	case s.PeekASN1Tag(cbasn1.Tag(2).ContextSpecific()) && s.ReadASN1(&v, cbasn1.Tag(2).ContextSpecific()):
		sr.Status = OCSPUnknown
		if !v.Empty() {
			return sr, malformed(what + ": unknown")
		}
	case s.PeekASN1Tag(cbasn1.Tag(1).ContextSpecific().Constructed()) && s.ReadASN1(&v, cbasn1.Tag(1).ContextSpecific().Constructed()):
		sr.Status = OCSPRevoked
		if sr.RevokedAt, err = readGeneralizedTime(&v, what+": revocationTime"); err != nil {
			return sr, err
		}
		var reason cryptobyte.String
		var has bool
		if !v.ReadOptionalASN1(&reason, &has, cbasn1.Tag(0).ContextSpecific().Constructed()) || !v.Empty() {
			return sr, malformed(what + ": revocationReason")
		}
		if has {
			if !reason.ReadASN1Enum(&sr.RevocationReason) || !reason.Empty() || sr.RevocationReason < 0 ||
				sr.RevocationReason > 10 || sr.RevocationReason == 7 {
				return sr, malformed(what + ": revocationReason")
			}
		}
	default:
		return sr, malformed(what + ": certStatus")
	}
	if sr.ThisUpdate, err = readGeneralizedTime(&s, what+": thisUpdate"); err != nil {
		return sr, err
	}
	var next cryptobyte.String
	var hasNext bool
	if !s.ReadOptionalASN1(&next, &hasNext, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return sr, malformed(what + ": nextUpdate")
	}
	if hasNext {
		if sr.NextUpdate, err = readGeneralizedTime(&next, what+": nextUpdate"); err != nil || !next.Empty() {
			return sr, malformed(what + ": nextUpdate")
		}
	}
	var ext cryptobyte.String
	var hasExt bool
	if !s.ReadOptionalASN1(&ext, &hasExt, cbasn1.Tag(1).ContextSpecific().Constructed()) || !s.Empty() {
		return sr, malformed(what + ": singleExtensions")
	}
	if hasExt {
		if _, _, err := readOCSPExtensions(ext, what+": singleExtensions"); err != nil {
			return sr, err
		}
	}
	return sr, nil
}

// CheckSignatureFrom checks that the response was signed by issuer, or by
// a responder certificate included in the response that issuer issued for
// OCSPSigning. The responder ID must name the key that signed.
func (r *OCSPResponse) CheckSignatureFrom(issuer *Certificate, v Verifier) error {
	if r.Status != OCSPSuccessful {
		return fmt.Errorf("pqx509: OCSP response status %d: %w", r.Status, ErrOCSPStatus)
	}
	if issuer == nil {
		return fmt.Errorf("pqx509: OCSP response: nil issuer: %w", ErrBadSignature)
	}
	names := func(c *Certificate) bool {
		if r.ResponderKeyHash != nil {
			return bytes.Equal(r.ResponderKeyHash, keyHashSHA1(c.PublicKey))
		}
		return bytes.Equal(r.RawResponderName, c.RawSubject)
	}
	signer := issuer
	if !names(issuer) {
		signer = nil
		for _, c := range r.Certificates {
			if names(c) {
				if err := checkDelegatedResponder(c, issuer, v); err != nil {
					return err
				}
				if r.ProducedAt.Before(c.NotBefore) || r.ProducedAt.After(c.NotAfter) {
					return fmt.Errorf("pqx509: OCSP responder certificate not valid at producedAt: %w", ErrNotAuthorized)
				}
				signer = c
				break
			}
		}
		if signer == nil {
			return fmt.Errorf("pqx509: OCSP responder ID names neither the issuer nor an included responder: %w", ErrNotAuthorized)
		}
	}
	if err := verifyWith(v, r.SignatureAlgorithm, signer.PublicKey, r.RawTBSResponseData, r.Signature); err != nil {
		return fmt.Errorf("pqx509: OCSP response signature: %w", err)
	}
	return nil
}
