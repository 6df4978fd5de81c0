package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.KV {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "avon.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestReopenAndPermissions(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "avon.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", p, st.Mode().Perm(), want)
		}
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := s.Get(ctx, "k")
	if err != nil || string(e.Value) != "v" || e.Version != v {
		t.Fatalf("after reopen: %+v %v", e, err)
	}
	v2, err := s.Put(ctx, "k2", nil, store.PutOptions{})
	if err != nil || v2 <= v {
		t.Fatalf("sequence did not survive reopen: %d after %d (%v)", v2, v, err)
	}
	if sv, err := s.SchemaVersion(ctx); err != nil || sv != len(migrations) {
		t.Fatalf("schema version %d, want %d (%v)", sv, len(migrations), err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "avon.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (999)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("want refusal of a newer schema, got %v", err)
	}
}

const crashEnv = "AVON_EMBEDDED_CRASH_CHILD"

// TestMain turns the test binary into the writer child of
// TestKilledProcessLosesNoCommit when crashEnv is set.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
	}
	os.Exit(m.Run())
}

func crashChild(path string) {
	s, err := Open(context.Background(), path)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	for i := 0; i < 100000; i++ {
		k := fmt.Sprintf("crash/%06d", i)
		v, err := s.Put(context.Background(), k, []byte("value-"+k), store.PutOptions{})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Printf("OK %s %d\n", k, v) // printed only after the commit returned
	}
	os.Exit(0)
}

func TestKilledProcessLosesNoCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "avon.db")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	committed := map[string]int64{}
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(20 * time.Second)
	for sc.Scan() && len(committed) < 200 && time.Now().Before(deadline) {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "OK" {
			v, _ := strconv.ParseInt(f[2], 10, 64)
			committed[f[1]] = v
		} else if len(f) > 0 && f[0] == "ERR" {
			t.Fatalf("child: %s", sc.Text())
		}
	}
	// Kill mid-stream: writes are in flight.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(committed) < 50 {
		t.Fatalf("child committed only %d writes before the deadline", len(committed))
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	for k, v := range committed {
		e, err := s.Get(context.Background(), k)
		if err != nil {
			t.Fatalf("committed %s lost after kill -9: %v", k, err)
		}
		if e.Version != v || string(e.Value) != "value-"+k {
			t.Fatalf("committed %s changed: %+v", k, e)
		}
	}
}

func BenchmarkPut(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "avon.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	val := make([]byte, 256)
	i := 0
	for b.Loop() {
		if _, err := s.Put(context.Background(), "bench/"+strconv.Itoa(i%1000), val, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkGet(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "avon.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 1000; i++ {
		if _, err := s.Put(context.Background(), "bench/"+strconv.Itoa(i), make([]byte, 256), store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if _, err := s.Get(context.Background(), "bench/"+strconv.Itoa(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
