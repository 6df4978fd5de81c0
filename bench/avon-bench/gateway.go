package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/store/memstore"
)

// The child process's role switch.
const (
	roleEnv     = "AVON_BENCH_ROLE"
	roleGateway = "gateway"
)

// benchPrefix is the tunnel network: room for 65k agents.
var benchPrefix = netip.MustParsePrefix("100.64.0.0/16")

// hello is the one line the gateway child prints on stdout once it runs.
type hello struct {
	UDPPort uint16 `json:"udp_port"`
	HTTP    string `json:"http"`
}

// gwStats is what the child's /stats returns.
type gwStats struct {
	// CPU seconds of the whole gateway process (getrusage RUSAGE_SELF).
	CPUUser, CPUSys float64
	// Heap in bytes (runtime.MemStats), after two GCs when asked.
	HeapAlloc, HeapInuse, HeapObjects, Sys uint64
	Goroutines                             int
	Sessions                               int
	// Engine counters (core/gateway.Stats).
	RxDatagrams, CookieReplies, ProofCookie, ProofToken, HandshakeQueueFull       uint64
	HandshakesStarted, Responses, InitiationRefused, Busy, DropRateLimited        uint64
	FragNoState, FragRefused, FinishRefused, HandshakeErrors                      uint64
	SessionsEstablished, SessionsEnded, SessionsReplaced, SessionsExpired         uint64
	SessionsDead, Rekeys, RekeyRefused, PulsesAccepted, PulsesRefused, SendErrors uint64
	KeepalivesTx, KeepalivesRx, DropNoSession, DropAuth, DropReplay               uint64
}

// CPU is user + system seconds.
func (s gwStats) CPU() float64 { return s.CPUUser + s.CPUSys }

// portBind opens its bind on port 0 (any free port) whatever the engine
// asks, and remembers the port the kernel chose.
type portBind struct {
	conn.Bind
	mu   sync.Mutex
	port uint16
}

func (b *portBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, port, err := b.Bind.Open(0)
	b.mu.Lock()
	b.port = port
	b.mu.Unlock()
	return fns, port, err
}

func (b *portBind) Port() uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.port
}

// gatewayMain runs the gateway child until stdin closes (the driver ended)
// or SIGTERM.
func gatewayMain(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("avon-bench gateway", flag.ContinueOnError)
	rootPath := fs.String("root", "", "root CA certificate (DER)")
	workers := fs.Int("workers", 0, "handshake workers (0: the engine's default)")
	queue := fs.Int("queue", 0, "handshake queue length (0: the engine's default)")
	pulse := fs.Duration("pulse", 10*time.Second, "pulse interval told to agents")
	loadThreshold := fs.Int("load-threshold", 0, "handshake messages/s at which cookies are required (0: default)")
	pol := fs.String("policy", "", `"cedar": enforce policy, every session admitted by an in-process Cedar connect decision`)
	delegated := fs.Bool("delegated", true, "sign Responses with a delegated key certified by the gateway key, as the core does by default")
	if err := fs.Parse(args); err != nil {
		return err
	}
	root, err := os.ReadFile(*rootPath)
	if err != nil {
		return fmt.Errorf("gateway: root certificate: %w", err)
	}
	// Status checked through a callback, as the core's gateway does; the
	// benchmark revokes nothing.
	verifier, err := handshake.NewChainVerifier([][]byte{root}, handshake.ChainVerifierOptions{
		Revoked: func(*big.Int) (bool, error) { return false, nil }})
	if err != nil {
		return err
	}
	signer, err := handshake.NewMLDSA65Signer(gatewayKey().PrivateKey(), crand.Reader)
	if err != nil {
		return err
	}
	var keys *handshake.DelegatedKeys
	if *delegated {
		k, err := handshake.IssueCredential(signer, crand.Reader, time.Now(), handshake.DefaultCredentialValidity)
		if err != nil {
			return err
		}
		keys = &handshake.DelegatedKeys{}
		keys.Install(k)
		defer keys.Close()
	}
	pool, err := ipam.New(memstore.New(), benchPrefix)
	if err != nil {
		return err
	}
	var pc gateway.PolicyConfig
	switch *pol {
	case "":
	case "cedar":
		eng, err := newCedarEngine()
		if err != nil {
			return err
		}
		pc = gateway.PolicyConfig{Mode: gateway.PolicyEnforce, Engine: eng, GatewayID: "bench"}
	default:
		return fmt.Errorf("gateway: -policy %q: want \"\" or \"cedar\"", *pol)
	}
	bind := &portBind{Bind: conn.NewStdNetBind()}
	ctun := tuntest.NewChannelTUN()
	g, err := gateway.New(gateway.Config{
		TunnelPrefix: benchPrefix, Now: time.Now, Rand: crand.Reader, Signer: signer, Delegated: keys, Verifier: verifier,
		IPAM: pool, Workers: *workers, QueueLen: *queue, PulseInterval: *pulse, LoadThreshold: *loadThreshold, Policy: pc,
		// Every agent has its own loopback address; the default per-source
		// budget applies to each.
	}, ctun.TUN(), bind)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := g.Start(ctx); err != nil {
		return err
	}
	defer g.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: statsHandler(g, signer), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	if err := json.NewEncoder(stdout).Encode(hello{UDPPort: bind.Port(), HTTP: ln.Addr().String()}); err != nil {
		return err
	}
	// Until the driver closes our stdin (it ended, or died).
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}

// statsHandler serves /stats (?gc=1 collects garbage first), and CPU and
// heap profiles of this process written to a path the driver names.
func statsHandler(g *gateway.Gateway, signer handshake.Signer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/floor", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 || n > 100_000 {
			http.Error(w, "n: 1 to 100000", http.StatusBadRequest)
			return
		}
		us, err := floorCPU(signer, n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(us)
	})
	var profMu sync.Mutex
	var profFile *os.File
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
			runtime.GC()
		}
		_ = json.NewEncoder(w).Encode(readStats(g))
	})
	mux.HandleFunc("/cpuprofile/start", func(w http.ResponseWriter, r *http.Request) {
		profMu.Lock()
		defer profMu.Unlock()
		if profFile != nil {
			http.Error(w, "cpu profile already running", http.StatusConflict)
			return
		}
		f, err := os.Create(r.URL.Query().Get("path"))
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		profFile = f
	})
	mux.HandleFunc("/cpuprofile/stop", func(w http.ResponseWriter, r *http.Request) {
		profMu.Lock()
		defer profMu.Unlock()
		if profFile == nil {
			http.Error(w, "no cpu profile running", http.StatusConflict)
			return
		}
		pprof.StopCPUProfile()
		err := profFile.Close()
		profFile = nil
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/heapprofile", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		f, err := os.Create(r.URL.Query().Get("path"))
		if err == nil {
			err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}

func readStats(g *gateway.Gateway) gwStats {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := g.Stats()
	return gwStats{
		CPUUser: tvSeconds(ru.Utime), CPUSys: tvSeconds(ru.Stime),
		HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, HeapObjects: ms.HeapObjects, Sys: ms.Sys,
		Goroutines: runtime.NumGoroutine(), Sessions: g.Tracker().Len(),
		RxDatagrams: st.RxDatagrams.Load(), CookieReplies: st.CookieReplies.Load(), ProofCookie: st.ProofCookie.Load(),
		ProofToken: st.ProofToken.Load(), HandshakeQueueFull: st.HandshakeQueueFull.Load(),
		HandshakesStarted: st.HandshakesStarted.Load(), Responses: st.Responses.Load(),
		InitiationRefused: st.InitiationRefused.Load(), Busy: st.Busy.Load(), DropRateLimited: st.DropRateLimited.Load(),
		FragNoState: st.FragNoState.Load(), FragRefused: st.FragRefused.Load(), FinishRefused: st.FinishRefused.Load(),
		HandshakeErrors: st.HandshakeErrors.Load(), SessionsEstablished: st.SessionsEstablished.Load(),
		SessionsEnded: st.SessionsEnded.Load(), SessionsReplaced: st.SessionsReplaced.Load(),
		SessionsExpired: st.SessionsExpired.Load(), SessionsDead: st.SessionsDead.Load(), Rekeys: st.Rekeys.Load(),
		RekeyRefused: st.RekeyRefused.Load(), PulsesAccepted: st.PulsesAccepted.Load(), PulsesRefused: st.PulsesRefused.Load(),
		SendErrors: st.SendErrors.Load(), KeepalivesTx: st.KeepalivesTx.Load(), KeepalivesRx: st.KeepalivesRx.Load(),
		DropNoSession: st.DropNoSession.Load(), DropAuth: st.DropAuth.Load(), DropReplay: st.DropReplay.Load(),
	}
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
