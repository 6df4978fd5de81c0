package ca

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// IssueOnce (sdkca.OnceIssuer) issues at most one certificate under a
// caller's key, e.g. an ACME order: the caller needs no claim write of its
// own before issuing.
//
// The key is recorded under once/<SHA-256 of the key> with the serial and
// a digest of the request, create-only, in the same audited transaction as
// the certificate record and its ca.issue event: both records and the
// event, or none. Nothing is read before: an issuance costs no round trip
// more than Issue. A request whose key turns out recorded (the
// create-only write fails) is answered from the record: the same request
// gets the recorded certificate again (Replayed), another gets
// sdkca.ErrAlreadyIssued. A repeated request is checked like a new one
// first (a refused request is refused, recorded key or not).
//
// So a repeated request, and each request that loses a race under one
// key, has signed a certificate that is not recorded. It is discarded in
// this process: never stored, audited or returned to anyone, like one
// whose record write fails in Issue. A signature nobody holds certifies
// nothing to anyone; what a CA must never do, hand out two certificates
// for one key or one it has no record of, cannot happen. A read of the
// key before signing would spare that signature to repeated requests
// only (racing ones read no record either), at the price of a round trip
// in every issuance. The records stay as long as the certificate records
// do.
//
// Without host.AuditedApplier (an older core, or no audit function) the
// key cannot be recorded with the issuance: IssueOnce answers
// errdef.ErrNotImplemented having issued nothing, and the caller keeps its
// own claim.

// oncePrefix is where IssueOnce keys are recorded.
const oncePrefix = "once/"

// onceRecord is what once/<hash> holds.
type onceRecord struct {
	Serial  string `json:"serial"`
	Request string `json:"request"` // requestDigest of the request that was issued
}

// once is the IssueOnce key of an issuance: its storage key and the
// request's digest.
type once struct {
	key, digest string
	caller      string // the caller's key, for the audit event
}

// errOnceTaken: the create-only write found the key recorded; nothing was
// stored.
var errOnceTaken = errors.New("issue once: the key is recorded")

// errOnceUnsupported is the one ErrNotImplemented IssueOnce answers: the
// core cannot record the key with the issuance (no audited batches), so
// the caller should claim its own way and call Issue. Any other
// ErrNotImplemented met while issuing (a KMS or host call) is an internal
// error of this issuance, not a reason for the caller to stop asking.
var errOnceUnsupported = fmt.Errorf("issue once: the core cannot record the key with the issuance (host protocol minor 5): %w", errdef.ErrNotImplemented)

// onceErr maps an error of an issuance under a key: only
// errOnceUnsupported stays ErrNotImplemented.
func onceErr(err error) error {
	if errors.Is(err, errdef.ErrNotImplemented) && !errors.Is(err, errOnceUnsupported) {
		return fmt.Errorf("issue once: %v: %w", err, errdef.ErrInternal)
	}
	return err
}

func onceStorageKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return oncePrefix + hex.EncodeToString(h[:])
}

// requestDigest is SHA-256 over every field of r, each length-prefixed,
// so two requests have one digest only when they ask for the same thing.
func requestDigest(r *sdkca.IssueRequest) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	field := func(b []byte) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		h.Write(b)
	}
	list := func(ss []string) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(ss)))])
		for _, s := range ss {
			field([]byte(s))
		}
	}
	field(r.CSR)
	field(r.PublicKey)
	field([]byte(r.PublicKeyAlgorithm))
	field([]byte(r.Profile))
	field([]byte(r.Issuer))
	field([]byte(r.CommonName))
	list(r.DNSNames)
	list(r.IPAddresses)
	list(r.URIs)
	h.Write(n[:binary.PutVarint(n[:], int64(r.Lifetime))])
	return hex.EncodeToString(h.Sum(nil))
}

// onceRead is the answer of the read of a once record: found false when
// there is none.
type onceRead struct {
	rec   onceRecord
	found bool
	err   error
}

func (e *Engine) readOnce(ctx context.Context, key string) onceRead {
	en, err := e.st.Get(ctx, key)
	if errors.Is(err, host.ErrNotFound) {
		return onceRead{}
	}
	if err != nil {
		return onceRead{err: fmt.Errorf("issue once: read the key's record: %w", err)}
	}
	var r onceRecord
	if err := json.Unmarshal(en.Value, &r); err != nil || r.Serial == "" {
		return onceRead{err: fmt.Errorf("issue once: the key's record %s is corrupt (%v): %w", key, err, errdef.ErrInternal)}
	}
	return onceRead{rec: r, found: true}
}

// onceCapable reports whether the key can be recorded with the issuance.
func (e *Engine) onceCapable() bool {
	_, ok := e.st.(host.AuditedApplier)
	return ok && e.audit != nil && !e.noAudited.Load()
}

// IssueOnce implements sdkca.OnceIssuer.
func (e *Engine) IssueOnce(ctx context.Context, req *sdkca.IssueOnceRequest) (*sdkca.IssueOnceResponse, error) {
	if req.Key == "" || len(req.Key) > sdkca.MaxOnceKey || !utf8.ValidString(req.Key) {
		return nil, fmt.Errorf("issue once: a key of %d bytes (want 1 to %d of UTF-8): %w", len(req.Key), sdkca.MaxOnceKey, errdef.ErrInvalidArgument)
	}
	if !e.onceCapable() {
		return nil, errOnceUnsupported
	}
	if err := e.requireInit(); err != nil {
		return nil, err
	}
	o := &once{key: onceStorageKey(req.Key), digest: requestDigest(&req.Request), caller: req.Key}
	pr, err := e.prepare(ctx, &req.Request)
	if err != nil {
		return nil, onceErr(err)
	}
	res, err := e.sign(ctx, pr, o)
	if errors.Is(err, errOnceTaken) {
		rd := e.readOnce(ctx, o.key)
		if rd.err != nil {
			return nil, onceErr(rd.err)
		}
		if !rd.found {
			return nil, fmt.Errorf("issue once: the key was taken and its record is gone: %w", errdef.ErrInternal)
		}
		return e.replay(ctx, rd.rec, o)
	}
	if err != nil {
		return nil, onceErr(err)
	}
	return &sdkca.IssueOnceResponse{Issued: *res}, nil
}

// replay answers a request under a recorded key: the recorded certificate
// for the same request while it is good and unexpired,
// sdkca.ErrAlreadyIssued for another request or for a certificate revoked
// or expired meanwhile (a retry must not hand it out again).
func (e *Engine) replay(ctx context.Context, r onceRecord, o *once) (*sdkca.IssueOnceResponse, error) {
	if r.Request != o.digest {
		return nil, fmt.Errorf("issue once: certificate %s was issued under that key for another request: %w", r.Serial, sdkca.ErrAlreadyIssued)
	}
	rec, _, err := e.getRecord(ctx, r.Serial)
	if err != nil {
		return nil, onceErr(fmt.Errorf("issue once: the certificate recorded under the key: %w", err))
	}
	if rec.Status != string(sdkca.StatusGood) {
		return nil, fmt.Errorf("issue once: certificate %s recorded under that key is %s: %w", rec.Serial, rec.Status, sdkca.ErrAlreadyIssued)
	}
	now, err := e.trustedNow(ctx)
	if err != nil {
		return nil, onceErr(err)
	}
	if !now.Before(rec.NotAfter) {
		return nil, fmt.Errorf("issue once: certificate %s recorded under that key expired at %s: %w", rec.Serial, rec.NotAfter.UTC().Format(time.RFC3339), sdkca.ErrAlreadyIssued)
	}
	e.mu.RLock()
	is, ok := e.issuers[rec.Issuer]
	e.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("issue once: certificate %s names issuer %s, which is not loaded: %w", rec.Serial, rec.Issuer, errdef.ErrInternal)
	}
	return &sdkca.IssueOnceResponse{Replayed: true, Issued: sdkca.IssueResponse{Certificate: rec.DER, Chain: is.chain, Serial: rec.Serial,
		NotBefore: rec.NotBefore, NotAfter: rec.NotAfter}}, nil
}

// storeIssuedOnce is storeIssued with the key's record: the certificate
// record, the key's record (both create-only) and ev in one audited
// transaction. A taken serial wraps host.ErrVersionConflict, a recorded
// key is errOnceTaken; either way nothing is stored or recorded.
func (e *Engine) storeIssuedOnce(ctx context.Context, key string, b []byte, ev host.Event, o *once) error {
	aa, ok := e.st.(host.AuditedApplier)
	if !ok || e.audit == nil || e.noAudited.Load() {
		return errOnceUnsupported
	}
	ob, _ := json.Marshal(onceRecord{Serial: strings.TrimPrefix(key, certPrefix), Request: o.digest})
	ev.Fields["once"] = o.caller
	_, err := aa.ApplyAudited(ctx, []host.Op{{Key: key, Value: b, Check: true}, {Key: o.key, Value: ob, Check: true}}, ev)
	var ae *host.ApplyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae) && ae.Index == 1:
		return errOnceTaken
	case errors.Is(err, host.ErrVersionConflict):
		return err // the serial: nothing stored, nothing recorded
	case errors.Is(err, errdef.ErrNotImplemented):
		e.noAudited.Store(true) // an older core: Issue writes separately from now on
		return fmt.Errorf("%w (%v)", errOnceUnsupported, err)
	}
	return fmt.Errorf("store certificate %s with its key and audit event: %w", ev.Target, err)
}

var _ sdkca.OnceIssuer = (*Engine)(nil)
