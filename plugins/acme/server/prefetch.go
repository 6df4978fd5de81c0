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
// by the JWS kid and the resource named by the path, the use of the JWS
// nonce and the storing of the answer's fresh nonce (r.fresh), all in one
// host.Gather (one round trip to the core). Nothing is decided here;
// verifyPOST checks everything.
func (s *Server) readAhead(ctx context.Context, r *request) {
	var keys []string
	nonce := ""
	if j, err := jose.Parse(r.Body); err == nil {
		r.jws = j
		if j.Header.HasKID {
			if id, ok := strings.CutPrefix(j.Header.KID, r.url("/account/")); ok && validID(id) {
				keys = append(keys, pfxAccount+id)
			}
		}
		if j.Header.HasNonce {
			nonce = j.Header.Nonce
		}
	}
	if key := resourceKey(r.Path); key != "" && (len(keys) == 0 || keys[0] != key) {
		keys = append(keys, key)
	}
	if len(keys) == 0 && nonce == "" && r.fresh == nil {
		return
	}
	done := make(chan struct{})
	r.ahead = done
	gets := make([]*pendingGet, len(keys))
	r.mu.Lock()
	if r.pending == nil {
		r.pending = map[string]*pendingGet{}
	}
	for i, k := range keys {
		gets[i] = &pendingGet{done: done}
		r.pending[k] = gets[i]
	}
	r.mu.Unlock()
	var pn *pendingNonce
	if nonce != "" {
		pn = &pendingNonce{n: nonce, done: done}
		r.nonce = pn
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		calls := make([]host.Call, 0, len(keys)+1)
		getCalls := make([]*host.GetCall, len(keys))
		for i, k := range keys {
			getCalls[i] = &host.GetCall{Key: k}
			calls = append(calls, getCalls[i])
		}
		var use *host.CacheConsumeCall
		if pn != nil {
			// Refused here without a cache call when it cannot be a nonce.
			if err := checkNonce(nonce); err != nil {
				pn.err = err
			} else {
				use = nonceUse(nonce)
				calls = append(calls, use)
			}
		}
		if r.fresh != nil {
			calls = append(calls, r.fresh)
		}
		host.Gather(ctx, s.deps.Storage, s.deps.Cache, calls...)
		for i, c := range getCalls {
			gets[i].entry, gets[i].err = c.Entry, c.Err
		}
		if use != nil {
			pn.err = nonceVerdict(use)
		}
	}()
}

// pendingNonce is the use of a request's nonce under way.
type pendingNonce struct {
	n    string
	done chan struct{}
	err  error
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
