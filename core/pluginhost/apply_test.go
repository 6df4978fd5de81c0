package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/store/postgres"
	"github.com/avonzt/avon/core/store/redisstore"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
	"github.com/avonzt/avon/internal/testsvc/redistest"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// applyBackends open each store backend the core supports.
var applyBackends = map[string]func(t testing.TB) store.KV{
	"memstore": func(t testing.TB) store.KV { return memstore.New() },
	"embedded": func(t testing.TB) store.KV {
		kv, err := embedded.Open(context.Background(), filepath.Join(t.TempDir(), "avon.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kv.Close() })
		return kv
	},
	"postgres": func(t testing.TB) store.KV {
		pg := pgtest.Start(t)
		kv, err := postgres.Open(context.Background(), pg.CreateDatabase(t, "apply"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kv.Close() })
		return kv
	},
	"redis": func(t testing.TB) store.KV {
		rd := redistest.Start(t)
		kv, err := redisstore.Open(context.Background(), redisstore.Options{Addr: rd.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kv.Close() })
		return kv
	},
}

// serveHost serves h as the host service on a loopback gRPC server and
// returns a plugin-side client of it and the raw generated client.
func serveHost(t testing.TB, h host.Host) (host.Host, hostv1.HostClient) {
	t.Helper()
	conn := plugintest.ServeHost(t, h)
	return host.NewClient(conn, nil), hostv1.NewHostClient(conn)
}

// applyFixture is a plugin's host over one backend: the plugin's view
// through gRPC, and the root store under it to check what landed.
type applyFixture struct {
	root store.KV
	st   host.Storage
	ap   host.Applier
	raw  hostv1.HostClient
}

const applyNS = "plugins/acme/a/"

func newApplyFixture(t *testing.T, root store.KV) *applyFixture {
	t.Helper()
	ns, err := store.NewNamespace(root, applyNS)
	if err != nil {
		t.Fatal(err)
	}
	cl, raw := serveHost(t, newPluginHost("acme.a", Services{}, ns))
	ap, ok := cl.Storage().(host.Applier)
	if !ok {
		t.Fatal("the host client's storage is no host.Applier")
	}
	return &applyFixture{root: root, st: cl.Storage(), ap: ap, raw: raw}
}

// snapshot is every entry of the root store.
func (f *applyFixture) snapshot(t *testing.T) string {
	t.Helper()
	es, err := f.root.List(context.Background(), store.ListOptions{Limit: store.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%s=%q@%d ", e.Key, e.Value, e.Version)
	}
	return b.String()
}

// TestStorageApply is the conformance suite of host StorageApply, through
// a real gRPC hop, against every store backend.
func TestStorageApply(t *testing.T) {
	for name, open := range applyBackends {
		t.Run(name, func(t *testing.T) {
			f := newApplyFixture(t, open(t))
			ctx := context.Background()
			t.Run("writes", func(t *testing.T) { testApplyWrites(ctx, t, f) })
			t.Run("conflict", func(t *testing.T) { testApplyConflict(ctx, t, f) })
			t.Run("refused", func(t *testing.T) { testApplyRefused(ctx, t, f) })
			t.Run("refused-on-the-wire", func(t *testing.T) { testApplyRefusedRaw(ctx, t, f) })
		})
	}
}

func testApplyWrites(ctx context.Context, t *testing.T, f *applyFixture) {
	v0, err := f.st.Put(ctx, "w/old", []byte("x"), host.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ops := []host.Op{
		{Key: "w/a", Value: []byte("1"), Check: true},                // create
		{Key: "w/old", Value: []byte("2"), Check: true, Version: v0}, // update
		{Key: "w/b", Value: nil},                                     // unconditional, empty
		{Key: "w/gone", Delete: true},                                // absent, unchecked: no error
	}
	vs, err := f.ap.Apply(ctx, ops)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(vs) != len(ops) || vs[0] <= v0 || vs[1] <= vs[0] || vs[2] <= vs[1] || vs[3] != 0 {
		t.Fatalf("versions %v after %d: want increasing in op order, 0 for the delete", vs, v0)
	}
	for i, want := range []string{"1", "2", ""} {
		e, err := f.st.Get(ctx, ops[i].Key)
		if err != nil || string(e.Value) != want || e.Version != vs[i] {
			t.Fatalf("Get %s = %q@%d, %v; want %q@%d", ops[i].Key, e.Value, e.Version, err, want, vs[i])
		}
		// The write is confined to the plugin's namespace.
		if _, err := f.root.Get(ctx, applyNS+ops[i].Key); err != nil {
			t.Fatalf("root Get %s: %v", applyNS+ops[i].Key, err)
		}
	}
	// A checked delete at the right version removes the key.
	if _, err := f.ap.Apply(ctx, []host.Op{{Key: "w/a", Delete: true, Check: true, Version: vs[0]}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Get(ctx, "w/a"); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("Get after delete: %v, want ErrNotFound", err)
	}
}

func testApplyConflict(ctx context.Context, t *testing.T, f *applyFixture) {
	v, err := f.st.Put(ctx, "c/held", []byte("v"), host.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		ops   []host.Op
		index int
	}{
		{"stale version in the middle", []host.Op{
			{Key: "c/1", Value: []byte("1")},
			{Key: "c/held", Value: []byte("w"), Check: true, Version: v + 1000},
			{Key: "c/3", Value: []byte("3"), Check: true},
		}, 1},
		{"create of an existing key last", []host.Op{
			{Key: "c/1", Value: []byte("1")},
			{Key: "c/held", Value: []byte("w"), Check: true},
		}, 1},
		{"checked delete of an absent key at a version first", []host.Op{
			{Key: "c/none", Delete: true, Check: true, Version: v},
			{Key: "c/held", Delete: true},
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snapshot(t)
			_, err := f.ap.Apply(ctx, tc.ops)
			var ae *host.ApplyError
			if !errors.As(err, &ae) || !errors.Is(err, host.ErrVersionConflict) {
				t.Fatalf("Apply: %v, want an *ApplyError wrapping ErrVersionConflict", err)
			}
			if ae.Index != tc.index || ae.Key != tc.ops[tc.index].Key {
				t.Fatalf("conflict at op %d (%q), want %d (%q)", ae.Index, ae.Key, tc.index, tc.ops[tc.index].Key)
			}
			if after := f.snapshot(t); after != before {
				t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func testApplyRefused(ctx context.Context, t *testing.T, f *applyFixture) {
	many := make([]host.Op, host.MaxApplyOps+1)
	for i := range many {
		many[i] = host.Op{Key: fmt.Sprintf("r/%d", i)}
	}
	big := bytes.Repeat([]byte("x"), host.MaxApplySize/2+1)
	cases := []struct {
		name string
		ops  []host.Op
		want error
	}{
		{"no op", nil, errdef.ErrInvalidArgument},
		{"too many ops", many, errdef.ErrInvalidArgument},
		{"a key twice", []host.Op{{Key: "r/a"}, {Key: "r/a", Delete: true}}, errdef.ErrInvalidArgument},
		{"empty key", []host.Op{{Key: "r/a"}, {Key: ""}}, host.ErrInvalidKey},
		{"control character", []host.Op{{Key: "r/\x00"}}, host.ErrInvalidKey},
		{"key too long", []host.Op{{Key: strings.Repeat("k", 513)}}, host.ErrInvalidKey},
		{"value too large", []host.Op{{Key: "r/a", Value: make([]byte, host.MaxApplySize+1)}}, host.ErrValueTooLarge},
		{"values too large in all", []host.Op{{Key: "r/a", Value: big}, {Key: "r/b", Value: big}}, errdef.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snapshot(t)
			if _, err := f.ap.Apply(ctx, tc.ops); !errors.Is(err, tc.want) {
				t.Fatalf("Apply: %v, want %v", err, tc.want)
			}
			if after := f.snapshot(t); after != before {
				t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// testApplyRefusedRaw sends what the SDK client would refuse, to check
// the core refuses it too.
func testApplyRefusedRaw(ctx context.Context, t *testing.T, f *applyFixture) {
	many := make([]*hostv1.StorageOp, host.MaxApplyOps+1)
	for i := range many {
		many[i] = &hostv1.StorageOp{Key: fmt.Sprintf("raw/%d", i)}
	}
	cases := []struct {
		name string
		ops  []*hostv1.StorageOp
		want error
	}{
		{"no op", nil, errdef.ErrInvalidArgument},
		{"too many ops", many, errdef.ErrInvalidArgument},
		{"a key twice", []*hostv1.StorageOp{{Key: "raw/a"}, {Key: "raw/a"}}, errdef.ErrInvalidArgument},
		{"invalid key", []*hostv1.StorageOp{{Key: "raw/a"}, {Key: "raw/\x7f"}}, host.ErrInvalidKey},
		{"key over the namespace's room", []*hostv1.StorageOp{{Key: strings.Repeat("k", 512-len(applyNS)+1)}}, host.ErrInvalidKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snapshot(t)
			_, err := f.raw.StorageApply(ctx, &hostv1.StorageApplyRequest{Ops: tc.ops})
			if err = errdef.FromStatus(err); !errors.Is(err, tc.want) {
				t.Fatalf("StorageApply: %v, want %v", err, tc.want)
			}
			if after := f.snapshot(t); after != before {
				t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// plainStorage hides the Applier of a storage: a host without StorageApply.
type plainStorage struct{ host.Storage }

type plainHost struct {
	host.Host
	st host.Storage
}

func (h plainHost) Storage() host.Storage { return plainStorage{h.st} }

// TestStorageApplyNotImplemented: against a host without the RPC the
// client reports errdef.ErrNotImplemented, which plugins detect to fall
// back to single writes.
func TestStorageApplyNotImplemented(t *testing.T) {
	ph := newPluginHost("acme.a", Services{}, memstore.New())
	cl, _ := serveHost(t, plainHost{Host: ph, st: ph.Storage()})
	_, err := cl.Storage().(host.Applier).Apply(context.Background(), []host.Op{{Key: "k"}})
	if !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("Apply against a host without it: %v, want ErrNotImplemented", err)
	}
	if _, err := cl.Storage().Get(context.Background(), "k"); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("Get: %v, want ErrNotFound (nothing written)", err)
	}
}
