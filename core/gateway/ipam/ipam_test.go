package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/memstore"
)

var bg = context.Background()

func backends(t *testing.T) map[string]store.KV {
	kv, err := embedded.Open(bg, filepath.Join(t.TempDir(), "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	return map[string]store.KV{"memstore": memstore.New(), "embedded": kv}
}

func TestAssign(t *testing.T) {
	for name, kv := range backends(t) {
		t.Run(name, func(t *testing.T) {
			p, err := ipam.New(kv, netip.MustParsePrefix("100.96.0.0/16"))
			if err != nil {
				t.Fatal(err)
			}
			if g := p.Gateway(); g != netip.MustParseAddr("100.96.0.1") {
				t.Fatalf("gateway %v", g)
			}
			seen := map[netip.Addr]string{}
			for i := range 200 {
				id := fmt.Sprintf("avon://agent/%d", i)
				a, err := p.Assign(bg, id)
				if err != nil {
					t.Fatal(err)
				}
				if !p.Prefix().Contains(a) || a == p.Gateway() || a == p.Prefix().Addr() {
					t.Fatalf("%s got %v", id, a)
				}
				if other, dup := seen[a]; dup {
					t.Fatalf("%v given to %s and %s", a, other, id)
				}
				seen[a] = id
				again, err := p.Assign(bg, id)
				if err != nil || again != a {
					t.Fatalf("second assign %v %v, first %v", again, err, a)
				}
				if owner, ok, err := p.Owner(bg, a); err != nil || !ok || owner != id {
					t.Fatalf("owner of %v: %q %v %v", a, owner, ok, err)
				}
			}
		})
	}
}

func TestExhaustionAndRelease(t *testing.T) {
	for name, kv := range backends(t) {
		t.Run(name, func(t *testing.T) {
			// /29: 8 addresses minus network, gateway and broadcast.
			p, err := ipam.New(kv, netip.MustParsePrefix("10.9.0.0/29"))
			if err != nil {
				t.Fatal(err)
			}
			got := map[netip.Addr]bool{}
			for i := range 5 {
				a, err := p.Assign(bg, fmt.Sprint("a", i))
				if err != nil {
					t.Fatalf("agent %d: %v", i, err)
				}
				got[a] = true
			}
			for _, bad := range []string{"10.9.0.0", "10.9.0.1", "10.9.0.7"} {
				if got[netip.MustParseAddr(bad)] {
					t.Fatalf("handed out %s", bad)
				}
			}
			if _, err := p.Assign(bg, "a5"); !errors.Is(err, ipam.ErrExhausted) {
				t.Fatalf("sixth agent: %v", err)
			}
			a2, _, _ := p.Lookup(bg, "a2")
			if err := p.Release(bg, "a2"); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := p.Lookup(bg, "a2"); ok {
				t.Fatal("still assigned after release")
			}
			if err := p.Release(bg, "a2"); err != nil {
				t.Fatalf("second release: %v", err)
			}
			a5, err := p.Assign(bg, "a5")
			if err != nil || a5 != a2 {
				t.Fatalf("after release: %v %v (freed %v)", a5, err, a2)
			}
		})
	}
}

func TestConcurrentAssign(t *testing.T) {
	for name, kv := range backends(t) {
		t.Run(name, func(t *testing.T) {
			// Two "replicas" (pools over one store) race for the same agents.
			p1, _ := ipam.New(kv, netip.MustParsePrefix("fd00:a::/120"))
			p2, _ := ipam.New(kv, netip.MustParsePrefix("fd00:a::/120"))
			var mu sync.Mutex
			byAgent := map[string]map[netip.Addr]bool{}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := p1
					if g%2 == 1 {
						p = p2
					}
					for i := range 20 {
						id := fmt.Sprint("agent-", i)
						a, err := p.Assign(bg, id)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						if byAgent[id] == nil {
							byAgent[id] = map[netip.Addr]bool{}
						}
						byAgent[id][a] = true
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			owners := map[netip.Addr]string{}
			for id, as := range byAgent {
				if len(as) != 1 {
					t.Fatalf("%s got %d addresses: %v", id, len(as), as)
				}
				for a := range as {
					if o, dup := owners[a]; dup {
						t.Fatalf("%v given to %s and %s", a, o, id)
					}
					owners[a] = id
				}
			}
			if len(owners) != 20 {
				t.Fatalf("%d agents assigned", len(owners))
			}
		})
	}
}

type noBatch struct{ store.KV }

func TestRefused(t *testing.T) {
	if _, err := ipam.New(noBatch{memstore.New()}, netip.MustParsePrefix("10.0.0.0/24")); !errors.Is(err, ipam.ErrNoBatch) {
		t.Fatalf("store without batches: %v", err)
	}
	for _, pfx := range []string{"10.0.0.0/31", "10.0.0.1/32", "fd00::/127"} {
		if _, err := ipam.New(memstore.New(), netip.MustParsePrefix(pfx)); !errors.Is(err, ipam.ErrInvalid) {
			t.Fatalf("%s: %v", pfx, err)
		}
	}
	p, _ := ipam.New(memstore.New(), netip.MustParsePrefix("10.0.0.0/24"))
	for _, id := range []string{"", "bad\x00id", string(make([]byte, 600))} {
		if _, err := p.Assign(bg, id); err == nil {
			t.Fatalf("Assign(%q) accepted", id)
		}
	}
	if _, ok, err := p.Owner(bg, netip.MustParseAddr("192.0.2.1")); ok || err != nil {
		t.Fatalf("owner outside the prefix: %v %v", ok, err)
	}
}

// TestDualStack runs an IPv4 and an IPv6 pool over one store, as a
// dual-stack gateway does: an agent holds one address of each, releasing
// one leaves the other, and each family's record lives under its own key.
func TestDualStack(t *testing.T) {
	for name, kv := range backends(t) {
		t.Run(name, func(t *testing.T) {
			p4, err := ipam.New(kv, netip.MustParsePrefix("100.96.0.0/24"))
			if err != nil {
				t.Fatal(err)
			}
			p6, err := ipam.New(kv, netip.MustParsePrefix("fd00:96::/64"))
			if err != nil {
				t.Fatal(err)
			}
			if g := p6.Gateway(); g != netip.MustParseAddr("fd00:96::1") {
				t.Fatalf("v6 gateway %v", g)
			}
			a4, err := p4.Assign(bg, "agent-1")
			if err != nil {
				t.Fatal(err)
			}
			a6, err := p6.Assign(bg, "agent-1")
			if err != nil {
				t.Fatal(err)
			}
			if !a4.Is4() || !p4.Prefix().Contains(a4) || !a6.Is6() || !p6.Prefix().Contains(a6) || a6 == p6.Gateway() || a6 == p6.Prefix().Addr() {
				t.Fatalf("assigned %v and %v", a4, a6)
			}
			if again, _ := p6.Assign(bg, "agent-1"); again != a6 {
				t.Fatalf("v6 assignment not stable: %v then %v", a6, again)
			}
			e, err := kv.Get(bg, ipam.Prefix+"agent6/agent-1")
			if err != nil || string(e.Value) != a6.String() {
				t.Fatalf("v6 record: %v %q", err, e.Value)
			}
			if o, ok, err := p6.Owner(bg, a6); err != nil || !ok || o != "agent-1" {
				t.Fatalf("owner of %v: %q %v %v", a6, o, ok, err)
			}
			if _, ok, _ := p6.Owner(bg, a4); ok {
				t.Fatal("the v6 pool owns an IPv4 address")
			}
			if err := p6.Release(bg, "agent-1"); err != nil {
				t.Fatal(err)
			}
			if got, ok, err := p4.Lookup(bg, "agent-1"); err != nil || !ok || got != a4 {
				t.Fatalf("v4 after the v6 release: %v %v %v", got, ok, err)
			}
			if _, ok, _ := p6.Lookup(bg, "agent-1"); ok {
				t.Fatal("v6 still assigned after release")
			}
		})
	}
}

func TestRefusedIPv6(t *testing.T) {
	for _, pfx := range []string{
		"fd00::/48",             // too large
		"2001:db8::/32",         // too large
		"fd00::/127",            // too small
		"fe80::/64",             // link-local
		"ff02::/64",             // multicast
		"::1/128",               // loopback
		"::/64",                 // unspecified
		"::ffff:100.96.0.0/120", // IPv4-mapped
	} {
		if _, err := ipam.New(memstore.New(), netip.MustParsePrefix(pfx)); !errors.Is(err, ipam.ErrInvalid) {
			t.Errorf("%s: %v", pfx, err)
		}
	}
	for _, pfx := range []string{"fd00::/64", "2001:db8:1::/126", "fd00:1:2:3::/96"} {
		if _, err := ipam.New(memstore.New(), netip.MustParsePrefix(pfx)); err != nil {
			t.Errorf("%s: %v", pfx, err)
		}
	}
}

// TestCheckPrefix6: each refusal names its reason, and New refuses what
// CheckPrefix6 refuses with the same reason.
func TestCheckPrefix6(t *testing.T) {
	cases := []struct {
		pfx  netip.Prefix
		want error // nil: accepted
	}{
		{netip.MustParsePrefix("fd00::/64"), nil},
		{netip.MustParsePrefix("2001:db8:1::/126"), nil},
		{netip.MustParsePrefix("fd00:1:2:3::/96"), nil},
		{netip.MustParsePrefix("fd00::1/64"), nil}, // host bits are New's to mask
		{netip.MustParsePrefix("100.96.0.0/16"), ipam.ErrNotIPv6},
		{netip.MustParsePrefix("::ffff:100.96.0.0/120"), ipam.ErrNotIPv6},
		{netip.Prefix{}, ipam.ErrNotIPv6},
		{netip.MustParsePrefix("fe80::/64"), ipam.ErrNotUnicast6},
		{netip.MustParsePrefix("ff02::/64"), ipam.ErrNotUnicast6},
		{netip.MustParsePrefix("ff01::/64"), ipam.ErrNotUnicast6},
		{netip.MustParsePrefix("::1/126"), ipam.ErrNotUnicast6}, // masks to ::, unspecified
		{netip.MustParsePrefix("::/64"), ipam.ErrNotUnicast6},
		{netip.MustParsePrefix("fd00::/48"), ipam.ErrPrefixTooLarge},
		{netip.MustParsePrefix("2001:db8::/63"), ipam.ErrPrefixTooLarge},
		{netip.MustParsePrefix("fd00::/127"), ipam.ErrPrefixTooSmall},
		{netip.MustParsePrefix("fd00::/128"), ipam.ErrPrefixTooSmall},
	}
	for _, tc := range cases {
		err := ipam.CheckPrefix6(tc.pfx)
		if tc.want == nil {
			if err != nil {
				t.Errorf("CheckPrefix6(%v): %v", tc.pfx, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !errors.Is(err, ipam.ErrInvalid) {
			t.Errorf("CheckPrefix6(%v): %v, want %v wrapping %v", tc.pfx, err, tc.want, ipam.ErrInvalid)
		}
		if tc.want == ipam.ErrPrefixTooSmall || !tc.pfx.IsValid() || !tc.pfx.Addr().Is6() {
			continue // New refuses these first for too few host bits, or as invalid
		}
		if _, err := ipam.New(memstore.New(), tc.pfx); !errors.Is(err, tc.want) {
			t.Errorf("New(%v): %v, want %v", tc.pfx, err, tc.want)
		}
	}
}
