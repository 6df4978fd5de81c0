package server

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
	"github.com/avonzt/avon/sdk/plugintest"
)

// benchSignerServer starts a core with the kms-soft plugin (a real plugin
// process over go-plugin gRPC, as in production) and returns the gateway's
// handshake signer on its "avon-gateway" key and the plugin's pid.
func benchSignerServer(b testing.TB) (*handshakeSigner, int) {
	b.Helper()
	bin := plugintest.Build(b, "github.com/avonzt/avon/plugins/kms-soft")
	dir := b.TempDir()
	cfg := fmt.Sprintf(`
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
plugin "kms" "soft" {
  command = %q
  sha256  = %q
  config {
    passphrase     = env("AVON_TEST_KMS_PASSPHRASE")
    kdf_time       = 2
    kdf_memory_kib = 19456
    kdf_threads    = 1
  }
}
`, bin.Path, bin.SHA256)
	b.Setenv("AVON_TEST_KMS_PASSPHRASE", "correct horse battery staple")
	var diags bytes.Buffer
	s, err := Start(context.Background(), Options{ConfigPath: writeConfig(b, dir, cfg),
		Logger: hclog.NewNullLogger(), Diagnostics: &diags})
	if err != nil {
		b.Fatalf("start: %v\n%s", err, diags.String())
	}
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ks, err := newKMSSigner(ctx, s.Plugins(), "soft", gatewayKeyID, "gateway-identity")
	if err != nil {
		b.Fatal(err)
	}
	hs, err := newHandshakeSigner(ks)
	if err != nil {
		b.Fatal(err)
	}
	inst, _ := s.Plugins().Get("kms", "soft")
	return hs, inst.Status().PID
}

// cpuSelf is this process's CPU time (user + system).
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is process pid's CPU time from /proc (clock-tick resolution: read
// it over many operations).
func cpuOf(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the line.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// BenchmarkGatewaySigner puts the gateway's handshake signature in process
// (handshake.MLDSA65Signer, the key in memory) and through the kms-soft
// plugin (handshakeSigner, production's path: go-plugin gRPC to another
// process holding the "avon-gateway" key) side by side:
//
//   - sign: one responder signature at a time (latency);
//   - sign-parallel: four at a time, as the gateway's four handshake
//     workers sign;
//   - responder: the responder's whole handshake (HandleInitiation and
//     HandleFinish; the agent's work is outside the timer), sig_r by the
//     signer itself (local, kms-soft) or by a delegated key whose
//     credential kms-soft signed once before the timer (delegated: the
//     agent has no credential, the Response carries it; delegated-cached:
//     the agent hints at it, the Response leaves it out).
//
// Metrics besides ns/op: core-cpu-us/op, this process's CPU over the
// timed work, and plugin-cpu-us/op, the plugin process's CPU over the run.
func BenchmarkGatewaySigner(b *testing.B) {
	kmsSigner, pid := benchSignerServer(b)
	local, err := handshake.NewMLDSA65Signer(handshaketest.KeyFromLabel("avon bench gateway").PrivateKey(), crand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signers := []struct {
		name string
		s    handshake.Signer
		pid  int
	}{{"local", local, 0}, {"kms-soft", kmsSigner, pid}}
	msg := make([]byte, 32)
	report := func(b *testing.B, core time.Duration, pid int, plugin0 time.Duration) {
		b.ReportMetric(float64(core.Microseconds())/float64(b.N), "core-cpu-us/op")
		if pid != 0 {
			b.ReportMetric(float64((cpuOf(b, pid)-plugin0).Microseconds())/float64(b.N), "plugin-cpu-us/op")
		}
	}
	for _, sg := range signers {
		b.Run("sign/"+sg.name, func(b *testing.B) {
			var plugin0 time.Duration
			if sg.pid != 0 {
				plugin0 = cpuOf(b, sg.pid)
			}
			c0 := cpuSelf()
			for range b.N {
				if _, err := sg.s.Sign(msg, []byte("avon-v1 responder")); err != nil {
					b.Fatal(err)
				}
			}
			report(b, cpuSelf()-c0, sg.pid, plugin0)
		})
	}
	for _, sg := range signers {
		b.Run("sign-parallel/"+sg.name, func(b *testing.B) {
			var plugin0 time.Duration
			if sg.pid != 0 {
				plugin0 = cpuOf(b, sg.pid)
			}
			c0 := cpuSelf()
			b.SetParallelism(2) // 4 goroutines on 2 CPUs: the default 4 workers
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := sg.s.Sign(msg, []byte("avon-v1 responder")); err != nil {
						b.Error(err)
						return
					}
				}
			})
			report(b, cpuSelf()-c0, sg.pid, plugin0)
		})
	}
	pki, err := handshaketest.New(handshaketest.Options{Name: "AVON Signer Bench", Keys: handshaketest.LabelKeys("avon signer bench: ")})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	verifier, err := handshake.NewChainVerifier(pki.Roots(), handshake.ChainVerifierOptions{})
	if err != nil {
		b.Fatal(err)
	}
	type responderCase struct {
		name      string
		s         handshake.Signer
		pid       int
		delegated bool // sig_r by a delegated key certified by s
		cached    bool // the agent holds the credential
	}
	cases := []responderCase{{"local", local, 0, false, false}, {"kms-soft", kmsSigner, pid, false, false},
		{"delegated", kmsSigner, pid, true, false}, {"delegated-cached", kmsSigner, pid, true, true}}
	for _, sg := range cases {
		b.Run("responder/"+sg.name, func(b *testing.B) {
			var keys *handshake.DelegatedKeys
			var cred *handshake.Credential
			if sg.delegated {
				k, err := handshake.IssueCredential(sg.s, crand.Reader, time.Now(), time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				keys = &handshake.DelegatedKeys{}
				keys.Install(k)
				defer keys.Close()
				if sg.cached {
					cred = k.Credential()
				}
			}
			r, err := handshake.NewResponder(handshake.ResponderConfig{Signer: sg.s, Delegated: keys, Verifier: verifier, Rand: crand.Reader,
				Now: time.Now, ReplayCacheSize: b.N + 16})
			if err != nil {
				b.Fatal(err)
			}
			gwPub := sg.s.Public()
			var plugin0 time.Duration
			if sg.pid != 0 {
				plugin0 = cpuOf(b, sg.pid)
			}
			var core time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				// A new agent every time: a leaf signature the cache has not
				// seen, a leaf key to parse.
				key := handshaketest.KeyFromLabel(fmt.Sprintf("avon signer bench agent %d", i))
				leaf, err := pki.IssueAgent(fmt.Sprintf("agent-%d", i), key, now.Add(-time.Hour), now.Add(time.Hour))
				if err != nil {
					b.Fatal(err)
				}
				as, err := handshake.NewMLDSA65Signer(key.PrivateKey(), crand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: as, Chain: leaf.Chain,
					ResponderPublicKey: gwPub, Rand: crand.Reader, Now: time.Now, LocalIndex: 1, Credential: cred})
				if err != nil {
					b.Fatal(err)
				}
				init, err := in.Initiation(nil)
				if err != nil {
					b.Fatal(err)
				}
				c0 := cpuSelf()
				b.StartTimer()
				resp, p, err := r.HandleInitiation(init, 2)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				core += cpuSelf() - c0
				fin, _, err := in.HandleResponse(resp)
				if err != nil {
					b.Fatal(err)
				}
				c0 = cpuSelf()
				b.StartTimer()
				if _, err := p.HandleFinish(fin); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				core += cpuSelf() - c0
			}
			report(b, core, sg.pid, plugin0)
		})
	}
}
