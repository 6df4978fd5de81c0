package server

import (
	"context"
	"strings"
	"sync"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/host"
)

// Every storage and cache call is a round trip to the core. A POST needs
// several that do not depend on each other: the clock, the account its kid
// names, the resource its path names, and the use of its nonce. Handle
// starts them together when the request arrives (readAhead) instead of one
// after the other, so a POST-as-GET waits for about one round trip (the
// answer's fresh nonce needs none, see nonce.go).
//
// A read ahead is a read of the state at the time the request arrived: an
// answer built from it is one the server could have given a moment
// earlier, and every write stays a conditional put on the version read,
// so a change in between is a conflict, never lost. Each read ahead is used
// at most once; a second read of the same key goes to storage. The nonce's
// verdict is taken where Boulder's order puts the nonce check, but the
// nonce is used up whatever the request's fate.

// pendingGet is one storage read under way.
type pendingGet struct {
	done  chan struct{}
	entry host.Entry
	err   error
}

// readAhead starts the reads of r a POST will need: the account named
// by the JWS kid and the resource named by the path, and the use of the
// JWS nonce. Nothing is decided here; verifyPOST checks everything.
func (s *Server) readAhead(ctx context.Context, r *request) {
	if j, err := jose.Parse(r.Body); err == nil {
		r.jws = j
		if j.Header.HasNonce && j.Header.Nonce != "" {
			s.useNonceAhead(ctx, r, j.Header.Nonce)
		}
		if j.Header.HasKID {
			if id, ok := strings.CutPrefix(j.Header.KID, r.url("/account/")); ok && validID(id) {
				s.prefetch(ctx, r, pfxAccount+id)
			}
		}
	}
	if key := resourceKey(r.Path); key != "" {
		s.prefetch(ctx, r, key)
	}
}

// resourceKey is the storage key of the object a POST's path names, ""
// for a path that names none.
func resourceKey(path string) string {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	if len(seg) < 2 || !validID(seg[1]) {
		return ""
	}
	switch {
	case seg[0] == "order" && (len(seg) == 2 || len(seg) == 3 && seg[2] == "finalize"):
		return pfxOrder + seg[1]
	case seg[0] == "authz" && len(seg) == 2, seg[0] == "chall" && len(seg) == 3:
		return pfxAuthz + seg[1]
	case seg[0] == "cert" && len(seg) == 2:
		return pfxCert + seg[1]
	}
	return ""
}

// prefetch starts reading key for r.
func (s *Server) prefetch(ctx context.Context, r *request, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[string]*pendingGet{}
	}
	if _, ok := r.pending[key]; ok {
		return
	}
	g := &pendingGet{done: make(chan struct{})}
	r.pending[key] = g
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(g.done)
		g.entry, g.err = s.deps.Storage.Get(ctx, key)
	}()
}

// pendingNonce is the use of a request's nonce under way.
type pendingNonce struct {
	n    string
	done chan struct{}
	err  error
}

// useNonceAhead starts using up n, the nonce of r's JWS; consumeNonce
// takes the verdict when verifyPOST reaches the nonce check.
func (s *Server) useNonceAhead(ctx context.Context, r *request, n string) {
	pn := &pendingNonce{n: n, done: make(chan struct{})}
	r.nonce = pn
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(pn.done)
		pn.err = s.useNonce(ctx, n)
	}()
}

// get reads key for r: the read started ahead if there is one not used
// yet, else storage.
func (s *Server) get(ctx context.Context, r *request, key string) (host.Entry, error) {
	if r != nil {
		r.mu.Lock()
		g, ok := r.pending[key]
		delete(r.pending, key)
		r.mu.Unlock()
		if ok {
			select {
			case <-g.done:
				return g.entry, g.err
			case <-ctx.Done():
				return host.Entry{}, ctx.Err()
			}
		}
	}
	return s.deps.Storage.Get(ctx, key)
}

// async runs f in a goroutine Handle waits for; wait returns its error.
func (r *request) async(f func() error) (wait func() error) {
	done := make(chan struct{})
	var err error
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		err = f()
	}()
	return func() error {
		<-done
		return err
	}
}

// all runs fs concurrently and returns the first error in their order.
func all(fs ...func() error) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
