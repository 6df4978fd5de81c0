package keystore

import (
	"errors"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/avonzt/avon/sdk/kms"
)

// The key set, as sealed inside the file (integers big-endian; <n> is an
// n-byte length prefix):
//
//	u8   key set version (1)
//	u32  number of keys, then each key in ascending ID order:
//	       <1> ID, <1> algorithm name, u8 flags (bit 0: exportable),
//	       u32 primary version, u64 created (Unix ns, 0: unset),
//	       u16 number of labels, then each label in ascending key order:
//	         <2> key, <2> value
//	       u32 number of versions, then versions 1, 2, ... in order:
//	         u8 state (1 enabled, 2 destroyed), u64 created, u64 destroyed,
//	         <1> seed (the private material; empty once destroyed)
//
// A hand-written binary encoding rather than JSON: the encoder writes into
// one buffer of exactly the right size that the caller zeroizes (encoding/json
// would leave base64 copies of seeds in its pooled buffers), and the decoder
// is strict (canonical order, no trailing bytes) and never panics.
const (
	setVersion1    = 1
	stateEnabled   = 1
	stateDestroyed = 2
	flagExportable = 1
)

// Label limits, enforced on GenerateKey and on decoding.
const (
	maxLabels        = 64
	maxLabelKeyLen   = 128
	maxLabelValueLen = 1024
)

func checkLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("%d labels, at most %d", len(labels), maxLabels)
	}
	for k, v := range labels {
		if len(k) == 0 || len(k) > maxLabelKeyLen || !utf8.ValidString(k) {
			return fmt.Errorf("label key %q must be 1..%d bytes of UTF-8", k, maxLabelKeyLen)
		}
		if len(v) > maxLabelValueLen || !utf8.ValidString(v) {
			return fmt.Errorf("label %q: value must be at most %d bytes of UTF-8", k, maxLabelValueLen)
		}
	}
	return nil
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNano(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// encodedSize is the exact size of encodeSet's output.
func encodedSize(keys map[string]*entry) int {
	n := 1 + 4
	for _, e := range keys {
		n += 1 + len(e.meta.ID) + 1 + len(e.meta.Algorithm) + 1 + 4 + 8 + 2 + 4
		for k, v := range e.meta.Labels {
			n += 2 + len(k) + 2 + len(v)
		}
		for _, v := range e.meta.Versions {
			n += 1 + 8 + 8 + 1
			if m := e.material[v.Version]; m != nil {
				n += len(m.seed)
			}
		}
	}
	return n
}

// encodeSet serializes keys into a buffer the caller must zeroize: it
// holds every seed.
func encodeSet(keys map[string]*entry) ([]byte, error) {
	buf := make([]byte, 0, encodedSize(keys))
	// A fixed builder never reallocates, so no stray copy of a seed is left
	// behind in memory that is not cleared.
	b := cryptobyte.NewFixedBuilder(buf)
	b.AddUint8(setVersion1)
	b.AddUint32(uint32(len(keys)))
	for _, id := range sortedKeys(keys) {
		e := keys[id]
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(id)) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(e.meta.Algorithm)) })
		var flags uint8
		if e.meta.Exportable {
			flags |= flagExportable
		}
		b.AddUint8(flags)
		b.AddUint32(uint32(e.meta.PrimaryVersion))
		b.AddUint64(unixNano(e.meta.CreatedAt))
		b.AddUint16(uint16(len(e.meta.Labels)))
		for _, k := range sortedKeys(e.meta.Labels) {
			v := e.meta.Labels[k]
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(k)) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
		}
		b.AddUint32(uint32(len(e.meta.Versions)))
		for _, v := range e.meta.Versions {
			m := e.material[v.Version]
			state := uint8(stateDestroyed)
			if m != nil {
				state = stateEnabled
			}
			b.AddUint8(state)
			b.AddUint64(unixNano(v.CreatedAt))
			b.AddUint64(unixNano(v.DestroyedAt))
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
				if m != nil {
					b.AddBytes(m.seed)
				}
			})
		}
	}
	out, err := b.Bytes()
	if err != nil {
		clear(buf[:cap(buf)])
		return nil, fmt.Errorf("encode key set: %w", err)
	}
	return out, nil
}

var errTruncated = errors.New("truncated or malformed key set")

// decodeSet parses a decrypted key set and builds each enabled version's
// material. It never panics; on error nothing it built is left uncleared.
func decodeSet(pt []byte) (keys map[string]*entry, err error) {
	keys = map[string]*entry{}
	defer func() {
		if err != nil {
			for _, e := range keys {
				e.clear()
			}
			keys = nil
		}
	}()
	s := cryptobyte.String(pt)
	var ver uint8
	var n uint32
	if !s.ReadUint8(&ver) || !s.ReadUint32(&n) {
		return nil, errTruncated
	}
	if ver != setVersion1 {
		return nil, fmt.Errorf("key set version %d", ver)
	}
	prev := ""
	for i := uint32(0); i < n; i++ {
		e, err := decodeKey(&s)
		if err != nil {
			return nil, err
		}
		if i > 0 && e.meta.ID <= prev {
			e.clear()
			return nil, fmt.Errorf("key %q out of order", e.meta.ID)
		}
		prev = e.meta.ID
		keys[e.meta.ID] = e
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%d trailing bytes after the key set", len(s))
	}
	return keys, nil
}

func decodeKey(s *cryptobyte.String) (_ *entry, err error) {
	var id, alg cryptobyte.String
	var flags uint8
	var primary uint32
	var created uint64
	var nLabels uint16
	if !s.ReadUint8LengthPrefixed(&id) || !s.ReadUint8LengthPrefixed(&alg) || !s.ReadUint8(&flags) ||
		!s.ReadUint32(&primary) || !s.ReadUint64(&created) || !s.ReadUint16(&nLabels) {
		return nil, errTruncated
	}
	a := kms.Algorithm(alg)
	if !validID(string(id)) {
		return nil, fmt.Errorf("invalid key ID %q", id)
	}
	if seedSize(a) == 0 {
		return nil, fmt.Errorf("key %q: unknown algorithm %q", id, alg)
	}
	if flags&^flagExportable != 0 {
		return nil, fmt.Errorf("key %q: unknown flags %#x", id, flags)
	}
	e := &entry{material: map[int]*material{}, meta: kms.Key{ID: string(id), Algorithm: a,
		Exportable: flags&flagExportable != 0, CreatedAt: fromUnixNano(created)}}
	defer func() {
		if err != nil {
			e.clear()
		}
	}()
	if nLabels > 0 {
		e.meta.Labels = make(map[string]string, nLabels)
		prevKey := ""
		for i := 0; i < int(nLabels); i++ {
			var k, v cryptobyte.String
			if !s.ReadUint16LengthPrefixed(&k) || !s.ReadUint16LengthPrefixed(&v) {
				return nil, errTruncated
			}
			if i > 0 && string(k) <= prevKey {
				return nil, fmt.Errorf("key %q: labels out of order", id)
			}
			prevKey = string(k)
			e.meta.Labels[string(k)] = string(v)
		}
		if err := checkLabels(e.meta.Labels); err != nil {
			return nil, fmt.Errorf("key %q: %v", id, err)
		}
	}
	var nVersions uint32
	if !s.ReadUint32(&nVersions) {
		return nil, errTruncated
	}
	// Each version takes at least 18 bytes: a huge count in a short input
	// is malformed, and must not drive a huge allocation.
	if nVersions == 0 || int64(nVersions)*18 > int64(len(*s)) {
		return nil, fmt.Errorf("key %q: %d versions", id, nVersions)
	}
	e.meta.Versions = make([]kms.KeyVersion, 0, nVersions)
	for v := 1; v <= int(nVersions); v++ {
		var state uint8
		var vc, vd uint64
		var seed cryptobyte.String
		if !s.ReadUint8(&state) || !s.ReadUint64(&vc) || !s.ReadUint64(&vd) || !s.ReadUint8LengthPrefixed(&seed) {
			return nil, errTruncated
		}
		kv := kms.KeyVersion{Version: v, CreatedAt: fromUnixNano(vc), DestroyedAt: fromUnixNano(vd)}
		switch {
		case state == stateEnabled && vd == 0:
			m, err := parse(a, append([]byte(nil), seed...))
			if err != nil {
				return nil, fmt.Errorf("key %q version %d: %v", id, v, err)
			}
			kv.State, kv.PublicKey = kms.StateEnabled, m.public
			e.material[v] = m
		case state == stateDestroyed && len(seed) == 0:
			kv.State = kms.StateDestroyed
		default:
			return nil, fmt.Errorf("key %q version %d: state %d with %d bytes of material", id, v, state, len(seed))
		}
		e.meta.Versions = append(e.meta.Versions, kv)
	}
	if primary < 1 || primary > nVersions {
		return nil, fmt.Errorf("key %q: primary version %d of %d", id, primary, nVersions)
	}
	e.meta.PrimaryVersion = int(primary)
	// The primary is enabled unless every version is destroyed.
	if e.material[e.meta.PrimaryVersion] == nil && len(e.material) > 0 {
		return nil, fmt.Errorf("key %q: primary version %d is destroyed but others are enabled", id, primary)
	}
	return e, nil
}
