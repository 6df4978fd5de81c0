// Package oauthtest holds in-memory doubles for the oauth package's I/O
// seams: a Signer and KeySet over a private key held in the process (the
// core signs through a KMS plugin instead). For tests only.
package oauthtest

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/oauth"
)

// Keys is a Signer and KeySet with keys in memory. Rotate adds a key
// version; retired versions keep verifying until Drop.
type Keys struct {
	mu      sync.Mutex
	alg     string
	rand    io.Reader
	current oauth.Key
	signers map[string]func([]byte) ([]byte, error)
	keys    map[string]oauth.Key
	n       int
	// Fail, when set, makes Sign fail with it.
	Fail error
}

// New returns keys of alg (oauth.AlgMLDSA65 or oauth.AlgEdDSA) with a first
// version drawn from rand.
func New(alg string, rand io.Reader) (*Keys, error) {
	k := &Keys{alg: alg, rand: rand, signers: map[string]func([]byte) ([]byte, error){}, keys: map[string]oauth.Key{}}
	if err := k.Rotate(); err != nil {
		return nil, err
	}
	return k, nil
}

// Rotate makes a new current key version.
func (k *Keys) Rotate() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.n++
	id := fmt.Sprintf("test/%s/v%d", k.alg, k.n)
	var key oauth.Key
	var sign func([]byte) ([]byte, error)
	switch k.alg {
	case oauth.AlgMLDSA65:
		pub, priv, err := mldsa65.GenerateKey(k.rand)
		if err != nil {
			return err
		}
		pb, _ := pub.MarshalBinary()
		key = oauth.Key{ID: id, Algorithm: k.alg, Public: pb}
		sign = func(m []byte) ([]byte, error) {
			sig := make([]byte, mldsa65.SignatureSize)
			err := mldsa65.SignTo(priv, m, nil, true, sig)
			return sig, err
		}
	case oauth.AlgEdDSA:
		pub, priv, err := ed25519.GenerateKey(k.rand)
		if err != nil {
			return err
		}
		key = oauth.Key{ID: id, Algorithm: k.alg, Public: pub}
		sign = func(m []byte) ([]byte, error) { return ed25519.Sign(priv, m), nil }
	default:
		return errors.New("oauthtest: unknown algorithm " + k.alg)
	}
	k.current, k.keys[id], k.signers[id] = key, key, sign
	return nil
}

// Drop forgets a key version (tokens it signed stop verifying).
func (k *Keys) Drop(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.keys, id)
	delete(k.signers, id)
}

// Current implements oauth.Signer.
func (k *Keys) Current() oauth.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.current
}

// Sign implements oauth.Signer.
func (k *Keys) Sign(_ context.Context, msg []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.Fail != nil {
		return nil, k.Fail
	}
	return k.signers[k.current.ID](msg)
}

// SignWith signs msg with a given version (to forge tokens in tests).
func (k *Keys) SignWith(id string, msg []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.signers[id]
	if !ok {
		return nil, errors.New("oauthtest: no key " + id)
	}
	return s(msg)
}

// Lookup implements oauth.KeySet.
func (k *Keys) Lookup(kid string) (oauth.Key, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, ok := k.keys[kid]
	return key, ok
}

// Keys implements oauth.KeySet.
func (k *Keys) Keys() []oauth.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]oauth.Key, 0, len(k.keys))
	for _, key := range k.keys {
		out = append(out, key)
	}
	return out
}

var (
	_ oauth.Signer = (*Keys)(nil)
	_ oauth.KeySet = (*Keys)(nil)
)
