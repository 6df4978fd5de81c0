package main_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avonzt/avon/plugins/kms-soft/keystore"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmsrpc"
	"github.com/avonzt/avon/sdk/kms/kmstest"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

const pkg = "github.com/avonzt/avon/plugins/kms-soft"

func cfg(t testing.TB, v map[string]any) []byte {
	v["kdf_time"], v["kdf_memory_kib"], v["kdf_threads"] = keystore.MinKDF.Time, keystore.MinKDF.MemoryKiB, keystore.MinKDF.Threads
	if _, ok := v["path"]; !ok {
		v["path"] = "keystore.avks"
	}
	for _, k := range []string{"passphrase", "key_file"} {
		if _, ok := v[k]; !ok {
			v[k] = ""
		}
	}
	if _, ok := v["create_key_file"]; !ok {
		v["create_key_file"] = false
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The conformance kit, through a real plugin process over gRPC: errors,
// capabilities and every byte cross the process boundary.
func TestConformanceThroughPlugin(t *testing.T) {
	bin := plugintest.Build(t, pkg)
	kmstest.Run(t, func(t *testing.T) kms.KMS {
		s := plugintest.Start(t, bin, plugin.KindKMS, plugintest.Options{
			Config: cfg(t, map[string]any{"passphrase": "correct horse battery"}),
		})
		return kmsrpc.NewClient(s.Conn.Conn)
	})
}

func TestKeyFileAndRestart(t *testing.T) {
	bin := plugintest.Build(t, pkg)
	dir := t.TempDir()
	conf := cfg(t, map[string]any{"key_file": "kms.key", "create_key_file": true})
	s := plugintest.Start(t, bin, plugin.KindKMS, plugintest.Options{Config: conf, DataDir: dir})
	k := kmsrpc.NewClient(s.Conn.Conn)
	ctx := context.Background()
	if _, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "root", Algorithm: kms.MLDSA87}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "kms.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	s.Client.Kill()

	// A second process opens the same keystore with the same key file.
	s2 := plugintest.Start(t, bin, plugin.KindKMS, plugintest.Options{Config: conf, DataDir: dir})
	g, err := kmsrpc.NewClient(s2.Conn.Conn).GetKey(ctx, &kms.GetKeyRequest{ID: "root"})
	if err != nil || g.Key.Algorithm != kms.MLDSA87 {
		t.Fatalf("key lost across restart: %+v %v", g, err)
	}
	info, err := s2.Base.GetInfo(ctx, &pluginv1.GetInfoRequest{})
	if err != nil || info.GetName() != "kms-soft" || !strings.Contains(strings.Join(info.GetCapabilities(), ","), "kms.exporter") {
		t.Fatalf("info: %+v %v", info, err)
	}
}

func TestRefusesBadSecrets(t *testing.T) {
	bin := plugintest.Build(t, pkg)
	dir := t.TempDir()
	good := cfg(t, map[string]any{"passphrase": "correct horse battery"})
	s := plugintest.Start(t, bin, plugin.KindKMS, plugintest.Options{Config: good, DataDir: dir})
	s.Client.Kill()
	ctx := context.Background()

	cases := map[string][]byte{
		"wrong passphrase":  cfg(t, map[string]any{"passphrase": "not the passphrase"}),
		"no secret":         cfg(t, map[string]any{}),
		"both secrets":      cfg(t, map[string]any{"passphrase": "correct horse battery", "key_file": "k"}),
		"short passphrase":  cfg(t, map[string]any{"passphrase": "short"}),
		"missing key file":  cfg(t, map[string]any{"key_file": "absent.key"}),
		"unknown attribute": []byte(`{"passphrase":"correct horse battery","bogus":1}`),
	}
	wantProblem := map[string]string{
		"wrong passphrase":  "wrong passphrase",
		"no secret":         "no keystore passphrase",
		"both secrets":      "both passphrase and key_file",
		"short passphrase":  "shorter than 12",
		"missing key file":  "read key file",
		"unknown attribute": "unknown field",
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := plugintest.StartUnconfigured(t, bin, plugin.KindKMS)
			ps, err := s.Configure(t, plugintest.Options{Config: c, DataDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) == 0 || !strings.Contains(fmt.Sprint(ps), wantProblem[name]) {
				t.Fatalf("problems %v, want one mentioning %q", ps, wantProblem[name])
			}
			// Refused: calls answer not-configured, nothing was opened.
			_, err = kmsrpc.NewClient(s.Conn.Conn).GetKey(ctx, &kms.GetKeyRequest{ID: "x"})
			if !errors.Is(err, errdef.ErrNotConfigured) {
				t.Fatalf("call after refused configure: %v", err)
			}
		})
	}
	// A tampered keystore is refused with a clear error.
	path := filepath.Join(dir, "keystore.avks")
	b, _ := os.ReadFile(path)
	b[len(b)-3] ^= 0xff
	os.WriteFile(path, b, 0o600)
	s = plugintest.StartUnconfigured(t, bin, plugin.KindKMS)
	ps, err := s.Configure(t, plugintest.Options{Config: good, DataDir: dir})
	if err != nil || len(ps) == 0 || !strings.Contains(ps[0].Summary, "tampered") {
		t.Fatalf("tampered keystore: %v %v", ps, err)
	}
}

// BenchmarkSign compares, in one run, ML-DSA-65 and Ed25519 signing through
// the plugin process with the same keystore in-process.
func BenchmarkSign(b *testing.B) {
	bin := plugintest.Build(b, pkg)
	s := plugintest.Start(b, bin, plugin.KindKMS, plugintest.Options{
		Config: cfg(b, map[string]any{"passphrase": "correct horse battery"}),
	})
	remote := kmsrpc.NewClient(s.Conn.Conn)
	local, err := keystore.Open(keystore.Options{Path: filepath.Join(b.TempDir(), "ks"), Passphrase: []byte("correct horse battery"),
		Rand: rand.Reader, KDF: keystore.MinKDF})
	if err != nil {
		b.Fatal(err)
	}
	defer local.Close()
	ctx := context.Background()
	msg := make([]byte, 256)
	for _, a := range []kms.Algorithm{kms.MLDSA65, kms.Ed25519} {
		for name, k := range map[string]kms.KMS{"plugin": remote, "inprocess": local} {
			r, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{Algorithm: a})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(string(a)+"/"+name+"/serial", func(b *testing.B) {
				for b.Loop() {
					if _, err := k.Sign(ctx, &kms.SignRequest{ID: r.Key.ID, Message: msg}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(string(a)+"/"+name+"/parallel", func(b *testing.B) {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := k.Sign(ctx, &kms.SignRequest{ID: r.Key.ID, Message: msg}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
