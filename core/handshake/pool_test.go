package handshake

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestFinishPooledBuffers: the responder opens every Finish into a pooled
// buffer and parses each initiator's key into a pooled struct. Handshakes
// of different agents (own keys, own leaves) run at once, rounds after
// rounds, with a Finish whose sig_i does not verify among them: each session
// gets its own agent's identity, key and leaf, the broken one fails alone,
// and nothing a Result holds changes when the Finish's bytes or the pools
// are reused afterwards.
func TestFinishPooledBuffers(t *testing.T) {
	f := newFixture(t)
	f.rand = &lockedReader{r: detRand("pooled")}
	r := f.responder(t, fixedNow)
	r.replay = newReplayCache(1024)
	const agents, rounds = 4, 3
	type agent struct {
		id    string
		chain [][]byte
		in    func() *Initiator
	}
	as := make([]agent, agents)
	for i := range as {
		label, certLabel := fmt.Sprintf("pooled-%d", i), fmt.Sprintf("pooled-%d", i)
		if i == agents-1 {
			certLabel = "someone else's key" // its sig_i does not verify
		}
		chain, _ := f.pki.agent(t, fmt.Sprintf("agent-pool-%d", i), certLabel, testNow.Add(-time.Hour), testNow.Add(time.Hour))
		_, sk := mldsaKey(label)
		s, err := NewMLDSA65Signer(sk, &lockedReader{r: detRand(label)})
		if err != nil {
			t.Fatal(err)
		}
		as[i] = agent{id: fmt.Sprintf("agent-pool-%d", i), chain: chain, in: func() *Initiator {
			in, err := NewInitiator(InitiatorConfig{Signer: s, Chain: chain, ResponderPublicKey: f.gwPub, ResponderID: f.gwID,
				Rand: f.rand, Now: fixedNow, LocalIndex: uint32(10 + i)})
			if err != nil {
				t.Fatal(err)
			}
			return in
		}}
	}
	var kept []*Result
	for round := range rounds {
		type done struct {
			i   int
			res *Result
			fin []byte
			err error
		}
		out := make(chan done, agents)
		var wg sync.WaitGroup
		for i := range as {
			in := as[i].in()
			init, err := in.Initiation(nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, p, err := r.HandleInitiation(init, uint32(1000*round+i+1))
			if err != nil {
				t.Fatal(err)
			}
			fin, _, err := in.HandleResponse(resp)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				res, err := p.HandleFinish(fin)
				out <- done{i: i, res: res, fin: fin, err: err}
			})
		}
		wg.Wait()
		close(out)
		for d := range out {
			if d.i == agents-1 {
				if !errors.Is(d.err, ErrSignature) {
					t.Fatalf("round %d: broken sig_i: %v, want ErrSignature", round, d.err)
				}
				continue
			}
			if d.err != nil {
				t.Fatalf("round %d, agent %d: %v", round, d.i, d.err)
			}
			if d.res.Peer.ID != as[d.i].id || !bytes.Equal(d.res.Peer.Leaf, as[d.i].chain[0]) {
				t.Fatalf("round %d: agent %d got the identity of %q", round, d.i, d.res.Peer.ID)
			}
			clear(d.fin) // the caller's buffer is reused for something else
			kept = append(kept, d.res)
		}
	}
	for _, res := range kept {
		var i int
		if _, err := fmt.Sscanf(res.Peer.ID, "agent-pool-%d", &i); err != nil {
			t.Fatal(err)
		}
		pk, _ := mldsaKey(fmt.Sprintf("pooled-%d", i))
		want, _ := pk.MarshalBinary()
		if !bytes.Equal(res.Peer.PublicKey, want) || !bytes.Equal(res.Peer.Leaf, as[i].chain[0]) {
			t.Fatalf("%s: key or leaf changed after its Finish and the pools were reused", res.Peer.ID)
		}
	}
}

// TestHandleInitiationTo: a Response built in a caller's buffer full of
// old bytes is the Response HandleInitiation makes from the same state
// (same randomness), and lies in that buffer; a buffer too small is left
// alone; the Finish answering it completes the handshake.
func TestHandleInitiationTo(t *testing.T) {
	f0, f1, f2 := newFixture(t), newFixture(t), newFixture(t) // the same keys, each its own random stream
	r1, r2 := f1.responder(t, fixedNow), f2.responder(t, fixedNow)
	in := f0.initiator(t, 1, fixedNow)
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := r1.HandleInitiation(init, 7)
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{0xa5}, ResponseFullLen)
	got, p, err := r2.HandleInitiationTo(buf[:0], init, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Response built in a used buffer differs from HandleInitiation's")
	}
	if &got[0] != &buf[0] {
		t.Fatal("Response not built in the given buffer")
	}
	fin, _, err := in.HandleResponse(got)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.HandleFinish(fin); err != nil {
		t.Fatal(err)
	}

	small := bytes.Repeat([]byte{0xa5}, ResponseLen-1)
	init2, err := f0.initiator(t, 2, fixedNow).Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err = r2.HandleInitiationTo(small[:0], init2, 8)
	if err != nil || len(got) != ResponseLen || !bytes.Equal(small, bytes.Repeat([]byte{0xa5}, ResponseLen-1)) {
		t.Fatalf("short buffer: err %v, %d bytes, buffer written %v", err, len(got), !bytes.Equal(small, bytes.Repeat([]byte{0xa5}, ResponseLen-1)))
	}
}
