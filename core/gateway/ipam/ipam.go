// Package ipam assigns tunnel addresses to agents: one stable address per
// agent identity inside the gateway's tunnel_cidr, kept in the core's store
// so every replica and every restart hands an agent the same address.
//
// Layout in the store (under Prefix):
//
//	gateway/ipam/addr/<address>   -> agent id  (who holds an address)
//	gateway/ipam/agent/<agent id>  -> address  (an agent's IPv4 address)
//	gateway/ipam/agent6/<agent id> -> address  (an agent's IPv6 address)
//
// A dual-stack gateway runs two pools over one store, one per family: an
// agent then holds one address of each, and neither pool sees the other's
// assignments.
//
// Both keys of an assignment are created in one atomic batch
// (store.Batcher), create-only, so two replicas assigning at once never give
// one address to two agents nor two addresses to one agent: the loser of a
// race re-reads and takes the winner's answer.
//
// An agent's first choice is derived from a hash of its id, so addresses are
// spread over the pool and mostly stable even if the records are lost;
// collisions probe forward. The pool's first usable address is the
// gateway's own; the network and (IPv4) broadcast addresses are never given.
package ipam

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"net/netip"

	"github.com/avonzt/avon/core/store"
)

// Prefix is where assignments live in the store.
const Prefix = "gateway/ipam/"

// MaxProbes bounds the addresses tried for one assignment.
const MaxProbes = 4096

// Bounds of an IPv6 pool's prefix length: at least a /64 (a shorter
// prefix would hand agents a route over far more than a tunnel needs) and
// at most a /126 (the gateway and one agent). An IPv4 pool needs a /30 or
// shorter.
const (
	MinBits6 = 64
	MaxBits6 = 126
)

// Errors.
var (
	ErrExhausted = errors.New("ipam: no free tunnel address")
	ErrInvalid   = errors.New("ipam: invalid argument")
	ErrNoBatch   = errors.New("ipam: the store cannot write atomic batches")
)

// Reasons CheckPrefix6 refuses an IPv6 pool's prefix; each error it
// returns wraps ErrInvalid and one of these.
var (
	ErrNotIPv6        = errors.New("ipam: not an IPv6 prefix")
	ErrNotUnicast6    = errors.New("ipam: not a unicast IPv6 network")
	ErrPrefixTooLarge = errors.New("ipam: IPv6 prefix too large")
	ErrPrefixTooSmall = errors.New("ipam: IPv6 prefix too small")
)

// CheckPrefix6 checks the rules of an IPv6 pool's prefix: an IPv6 (not
// IPv4-mapped) unicast network (not link-local, multicast, loopback or
// unspecified) of MinBits6 to MaxBits6 bits. The error wraps ErrInvalid
// and one of ErrNotIPv6, ErrNotUnicast6, ErrPrefixTooLarge and
// ErrPrefixTooSmall, checked in that order. Host bits are ignored.
func CheckPrefix6(p netip.Prefix) error {
	a := p.Masked().Addr()
	switch {
	case !p.IsValid() || !a.Is6() || a.Is4In6() || a.Zone() != "":
		return fmt.Errorf("%w: %w: %v", ErrInvalid, ErrNotIPv6, p)
	case a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsLoopback() || a.IsUnspecified():
		return fmt.Errorf("%w: %w: %v (link-local, multicast, loopback or unspecified)", ErrInvalid, ErrNotUnicast6, p)
	case p.Bits() < MinBits6:
		return fmt.Errorf("%w: %w: %v (at most a /%d)", ErrInvalid, ErrPrefixTooLarge, p, MinBits6)
	case p.Bits() > MaxBits6:
		return fmt.Errorf("%w: %w: %v (at least a /%d)", ErrInvalid, ErrPrefixTooSmall, p, MaxBits6)
	}
	return nil
}

// Pool hands out addresses of one prefix. It is safe for concurrent use
// (all state is in the store).
type Pool struct {
	kv     store.KV
	b      store.Batcher
	prefix netip.Prefix
	size   *big.Int // usable addresses after the gateway's
	agents string   // store key prefix of the per-agent records
}

// New returns a pool over prefix (masked). It needs at least 4 addresses
// (IPv4 /30, IPv6 /126) and a store that writes batches; an IPv6 prefix
// must be a /64 or longer and a unicast one (not link-local, multicast,
// loopback or IPv4-mapped).
func New(kv store.KV, prefix netip.Prefix) (*Pool, error) {
	b, ok := kv.(store.Batcher)
	if !ok {
		return nil, ErrNoBatch
	}
	if !prefix.IsValid() || prefix.Addr().Zone() != "" {
		return nil, fmt.Errorf("%w: prefix %v", ErrInvalid, prefix)
	}
	prefix = prefix.Masked()
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	if hostBits < 2 {
		return nil, fmt.Errorf("%w: prefix %v is too small (need at least 2 host bits)", ErrInvalid, prefix)
	}
	agents := Prefix + "agent/"
	if prefix.Addr().Is6() {
		if err := CheckPrefix6(prefix); err != nil {
			return nil, err
		}
		agents = Prefix + "agent6/"
	}
	size := new(big.Int).Lsh(big.NewInt(1), uint(hostBits))
	// network address, the gateway's, and (IPv4) broadcast are not handed out
	size.Sub(size, big.NewInt(2))
	if prefix.Addr().Is4() {
		size.Sub(size, big.NewInt(1))
	}
	return &Pool{kv: kv, b: b, prefix: prefix, size: size, agents: agents}, nil
}

// Gateway returns the gateway's own address: the first after the network
// address.
func (p *Pool) Gateway() netip.Addr { return p.prefix.Addr().Next() }

// Prefix returns the pool's prefix.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

func (p *Pool) agentKey(id string) string { return p.agents + id }
func addrKey(a netip.Addr) string         { return Prefix + "addr/" + a.String() }
func (p *Pool) checkID(id string) error {
	if id == "" || len(id) > 512 {
		return fmt.Errorf("%w: agent id of %d bytes", ErrInvalid, len(id))
	}
	return store.ValidateKey(p.agentKey(id))
}

// nth returns the usable address with index i in [0, size): the gateway's
// address + 1 + i.
func (p *Pool) nth(i *big.Int) netip.Addr {
	base := new(big.Int).SetBytes(p.prefix.Addr().AsSlice())
	base.Add(base, big.NewInt(2))
	base.Add(base, i)
	b := base.FillBytes(make([]byte, p.prefix.Addr().BitLen()/8))
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Lookup returns the address assigned to agent id, if any.
func (p *Pool) Lookup(ctx context.Context, id string) (netip.Addr, bool, error) {
	if err := p.checkID(id); err != nil {
		return netip.Addr{}, false, err
	}
	e, err := p.kv.Get(ctx, p.agentKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return netip.Addr{}, false, nil
	}
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("ipam: read assignment of %s: %w", id, err)
	}
	a, err := netip.ParseAddr(string(e.Value))
	if err != nil || !p.prefix.Contains(a) {
		return netip.Addr{}, false, fmt.Errorf("ipam: assignment of %s is %q, not an address of %v: %w", id, e.Value, p.prefix, ErrInvalid)
	}
	return a, true, nil
}

// Owner returns the agent holding address a, if any.
func (p *Pool) Owner(ctx context.Context, a netip.Addr) (string, bool, error) {
	if !p.prefix.Contains(a) {
		return "", false, nil
	}
	e, err := p.kv.Get(ctx, addrKey(a))
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("ipam: read owner of %v: %w", a, err)
	}
	return string(e.Value), true, nil
}

// Assign returns agent id's address, assigning one on first use.
func (p *Pool) Assign(ctx context.Context, id string) (netip.Addr, error) {
	if a, ok, err := p.Lookup(ctx, id); err != nil || ok {
		return a, err
	}
	h := sha256.Sum256([]byte("avon-ipam-v1\x00" + id))
	start := new(big.Int).Mod(new(big.Int).SetBytes(h[:16]), p.size)
	probes := MaxProbes
	if p.size.IsInt64() && p.size.Int64() < int64(probes) {
		probes = int(p.size.Int64())
	}
	i := new(big.Int).Set(start)
	for n := 0; n < probes; n++ {
		a := p.nth(i)
		_, err := p.b.Apply(ctx, []store.Op{
			{Key: p.agentKey(id), Value: []byte(a.String()), Check: true},
			{Key: addrKey(a), Value: []byte(id), Check: true},
		})
		var be *store.BatchError
		switch {
		case err == nil:
			return a, nil
		case errors.As(err, &be) && be.Index == 0:
			// Another replica assigned this agent meanwhile: its answer.
			if a, ok, err := p.Lookup(ctx, id); err != nil || ok {
				return a, err
			}
		case errors.As(err, &be) && be.Index == 1:
			// Address taken: probe the next.
		default:
			return netip.Addr{}, fmt.Errorf("ipam: assign %v to %s: %w", a, id, err)
		}
		i.Add(i, big.NewInt(1))
		if i.Cmp(p.size) >= 0 {
			i.SetInt64(0)
		}
		if err := ctx.Err(); err != nil {
			return netip.Addr{}, fmt.Errorf("ipam: assign: %w", err)
		}
	}
	return netip.Addr{}, fmt.Errorf("%w in %v after %d probes", ErrExhausted, p.prefix, probes)
}

// Release frees agent id's address (a no-op when it has none).
func (p *Pool) Release(ctx context.Context, id string) error {
	if err := p.checkID(id); err != nil {
		return err
	}
	e, err := p.kv.Get(ctx, p.agentKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ipam: read assignment of %s: %w", id, err)
	}
	a, perr := netip.ParseAddr(string(e.Value))
	ops := []store.Op{{Key: p.agentKey(id), Delete: true, Check: true, Version: e.Version}}
	if perr == nil {
		if ae, err := p.kv.Get(ctx, addrKey(a)); err == nil && string(ae.Value) == id {
			ops = append(ops, store.Op{Key: addrKey(a), Delete: true, Check: true, Version: ae.Version})
		}
	}
	if _, err := p.b.Apply(ctx, ops); err != nil {
		return fmt.Errorf("ipam: release %s: %w", id, err)
	}
	return nil
}
