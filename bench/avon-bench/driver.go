package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
	"github.com/avonzt/avon/core/tunnel/control"
)

// options are the driver's flags.
type options struct {
	agents      int
	concurrency int
	rate        float64
	duration    time.Duration
	idle        time.Duration
	rekey       bool
	pulse       time.Duration
	workers     int
	queue       int
	gwCPUs      string
	cpuProfile  string
	memProfile  string
	jsonOut     string
	floorN      int
	finishGSO   bool
	policy      string
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("avon-bench", flag.ContinueOnError)
	fs.IntVar(&o.agents, "agents", 1000, "simulated agents (each its own loopback address, at most 65000)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "handshakes in flight at once")
	fs.Float64Var(&o.rate, "rate", 0, "handshakes started per second (0: as fast as -concurrency allows)")
	fs.DurationVar(&o.duration, "duration", 5*time.Minute, "longest the handshake phase may run")
	fs.DurationVar(&o.idle, "idle", 20*time.Second, "how long the sessions idle (pulsing) before the memory is read")
	fs.BoolVar(&o.rekey, "rekey", false, "after the idle phase, every session rekeys once")
	fs.DurationVar(&o.pulse, "pulse", 10*time.Second, "how often agents pulse in the idle phase")
	fs.IntVar(&o.workers, "workers", 0, "gateway handshake workers (0: engine default)")
	fs.IntVar(&o.queue, "queue", 0, "gateway handshake queue (0: engine default)")
	fs.StringVar(&o.gwCPUs, "gateway-cpus", "", "run the gateway under taskset -c with this CPU list")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the gateway's CPU profile of the handshake phase here (of the idle phase to <file>.idle, of the rekeys to <file>.rekey)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write the gateway's heap profile at the end of the idle phase here")
	fs.StringVar(&o.jsonOut, "json", "", "also write the report as JSON here")
	fs.StringVar(&o.policy, "policy", "", `"cedar": the gateway enforces policy, admitting every session by an in-process Cedar connect decision ("": no policy)`)
	fs.IntVar(&o.floorN, "floor", 300, "iterations of the primitive floor measured in the gateway process before and after the handshakes")
	fs.BoolVar(&o.finishGSO, "finish-gso", true, "agents send the fragments of their Finish as one UDP GSO datagram, as avon-agent's StdNetBind does (false: one datagram each)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.policy != "" && o.policy != "cedar":
		return o, fmt.Errorf("-policy %q: want \"\" or \"cedar\"", o.policy)
	case o.agents < 1 || o.agents > 65000:
		return o, fmt.Errorf("-agents %d: want 1 to 65000", o.agents)
	case o.floorN < 1 || o.floorN > 100_000:
		return o, fmt.Errorf("-floor %d: want 1 to 100000", o.floorN)
	case o.concurrency < 1 || o.concurrency > 4096:
		return o, fmt.Errorf("-concurrency %d: want 1 to 4096", o.concurrency)
	case o.rate < 0 || o.duration <= 0 || o.idle < 0 || o.pulse <= 0:
		return o, errors.New("-rate, -duration, -idle and -pulse must not be negative (-duration, -pulse above zero)")
	case o.idle > 150*time.Second:
		// Sessions must rekey before their keys age out (180 s); avon-bench
		// does not rekey on a timer.
		return o, fmt.Errorf("-idle %v: at most 150s", o.idle)
	}
	return o, nil
}

// report is what a run measured.
type report struct {
	Agents, Concurrency, GatewayWorkers int
	Rate                                float64
	GatewayCPUs                         string
	Policy                              string // -policy ("" none)
	NumCPU                              int

	Connected, Failed  int
	HandshakeSeconds   float64
	HandshakesPerSec   float64
	LatencyP50ms       float64
	LatencyP99ms       float64
	Attempts           int
	CookieReplies      int
	FloorUS            float64 // the primitive floor per handshake, gateway process, one thread (mean of before and after)
	FloorBeforeUS      float64
	FloorAfterUS       float64
	GatewayCPUPerHSus  float64 // gateway CPU (user+sys) / sessions established in the phase
	GatewaySysPerHSus  float64 // the kernel's (sys) part of GatewayCPUPerHSus
	RatioToFloor       float64
	GatewayCapacity    float64 // NumCPU / GatewayCPUPerHS: handshakes/s with every CPU on the gateway
	AgentCPUPerHSus    float64
	KeepalivesInPhase  uint64 // keepalives the gateway sent during the handshake phase (sessions older than 10 s, no pulses yet)
	GatewayQueueFull   uint64
	GatewayBusy        uint64
	GatewayRateLimited uint64

	IdleSeconds          float64
	IdleSessions         int
	HeapBaseBytes        uint64
	HeapIdleBytes        uint64
	BytesPerSession      float64
	GatewayIdleCPUPerSec float64 // CPU seconds per second while idling (pulses, timers)
	GatewayCPUPerPulseUS float64 // idle CPU / pulses accepted in the idle phase
	PulsesAcked          int64
	PulseFailures        int64
	PulseP50ms           float64
	PulseP99ms           float64

	Rekeys            int
	RekeyFailures     int
	GatewayCPUPerRKus float64
	GatewaySysPerRKus float64 // the kernel's (sys) part of GatewayCPUPerRKus
	RekeyP50ms        float64
	RekeyP99ms        float64

	End gwStats
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

// quantile returns the q-quantile in milliseconds (0 without samples).
func (l *latencies) quantile(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := min(int(q*float64(len(s))), len(s)-1)
	return float64(s[i]) / 1e6
}

func driverMain(args []string, out io.Writer) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	r, err := run(context.Background(), o, out)
	if err != nil {
		return err
	}
	printReport(out, r)
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(o.jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

// child is the running gateway process.
type child struct {
	cmd   *exec.Cmd
	stdin io.Closer
	http  string
	udp   uint16
}

// startGateway runs this binary as the gateway child.
func startGateway(o options, rootPath string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The gateway tells the agents the longest pulse interval, so that no
	// session dies of missed pulses during a long handshake phase; agents
	// pulse every -pulse in the idle phase (the gateway takes pulses at
	// any rate).
	args := []string{"-root", rootPath, "-pulse", control.MaxPulseInterval.String(),
		"-workers", fmt.Sprint(o.workers), "-queue", fmt.Sprint(o.queue), "-policy", o.policy}
	var cmd *exec.Cmd
	if o.gwCPUs != "" {
		cmd = exec.Command("taskset", append([]string{"-c", o.gwCPUs, exe}, args...)...)
	} else {
		cmd = exec.Command(exe, args...)
	}
	cmd.Env = append(os.Environ(), roleEnv+"="+roleGateway)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin}
	line := make(chan []byte, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Bytes()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case b, ok := <-line:
		var h hello
		if !ok || json.Unmarshal(b, &h) != nil || h.UDPPort == 0 {
			c.stop()
			return nil, errors.New("gateway child did not start (see its errors above)")
		}
		c.http, c.udp = h.HTTP, h.UDPPort
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, errors.New("gateway child did not start within 30s")
	}
	return c, nil
}

// stop closes the child's stdin (it then closes the gateway and exits) and
// waits for it, killing it after 10 s.
func (c *child) stop() {
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func (c *child) get(path string, v any) error {
	resp, err := httpClient.Get("http://" + c.http + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("gateway %s: %s: %s", path, resp.Status, b)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (c *child) stats(gc bool) (gwStats, error) {
	var s gwStats
	p := "/stats"
	if gc {
		p += "?gc=1"
	}
	return s, c.get(p, &s)
}

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

// makeAgents issues every agent's certificate (in parallel) and returns
// the agents and the root certificate.
func makeAgents(n int) ([]*agent, []byte, error) {
	pki, err := handshaketest.New(handshaketest.Options{Name: pkiName, Keys: handshaketest.LabelKeys(labelPrefix)})
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	agents := make([]*agent, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id := fmt.Sprintf("bench-%05d", i)
				k := agentKey(id)
				leaf, err := pki.IssueAgent(id, k, now.Add(-time.Hour), now.Add(24*time.Hour))
				if err != nil {
					errs <- err
					return
				}
				agents[i] = &agent{id: id, src: loopbackAddr(i), seed: k.Seed, chain: leaf.Chain}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, nil, err
	}
	return agents, pki.RootDER, nil
}

// run is one benchmark run: setup, handshakes, idle, rekeys.
func run(ctx context.Context, o options, log io.Writer) (*report, error) {
	fmt.Fprintf(log, "issuing %d agent certificates...\n", o.agents)
	agents, root, err := makeAgents(o.agents)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "avon-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rootPath := filepath.Join(dir, "root.der")
	if err := os.WriteFile(rootPath, root, 0o600); err != nil {
		return nil, err
	}
	gk := gatewayKey()
	g := &gw{pub: gk.Raw(), finishGSO: o.finishGSO}
	if g.id, err = handshake.ResponderID(g.pub); err != nil {
		return nil, err
	}
	c, err := startGateway(o, rootPath)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	g.addr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), c.udp))

	r := &report{Agents: o.agents, Concurrency: o.concurrency, Rate: o.rate, GatewayWorkers: o.workers,
		GatewayCPUs: o.gwCPUs, NumCPU: runtime.NumCPU(), Policy: o.policy}
	base, err := c.stats(true)
	if err != nil {
		return nil, err
	}
	r.HeapBaseBytes = base.HeapAlloc
	if err := c.get(fmt.Sprintf("/floor?n=%d", o.floorN), &r.FloorBeforeUS); err != nil {
		return nil, err
	}
	if base, err = c.stats(false); err != nil {
		return nil, err
	}

	// Every agent is one goroutine for its whole life: connect (within the
	// handshake slots and the rate), then pulse, and rekey once when told.
	life, stop := context.WithCancel(ctx)
	defer stop()
	hsCtx, hsCancel := context.WithTimeout(life, o.duration)
	defer hsCancel()
	slots := make(chan struct{}, o.concurrency)
	var (
		connected, failed         atomic.Int64
		attempts, cookies         atomic.Int64
		pulsesOK, pulsesFailed    atomic.Int64
		rekeysOK, rekeysFailed    atomic.Int64
		hsLat, pulseLat, rekeyLat latencies
		started                   atomic.Int64
		hsWG, rekeyWG, allWG      sync.WaitGroup
	)
	idleNow, rekeyNow := make(chan struct{}), make(chan struct{})
	if o.cpuProfile != "" {
		abs, _ := filepath.Abs(o.cpuProfile)
		if err := c.get("/cpuprofile/start?path="+url.QueryEscape(abs), nil); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(log, "handshakes: %d agents, %d in flight, rate %v/s (0: unlimited)...\n", o.agents, o.concurrency, o.rate)
	cpu0, self0 := base.CPU(), selfCPU()
	t0 := time.Now()
	hsWG.Add(len(agents))
	rekeyWG.Add(len(agents))
	for _, a := range agents {
		allWG.Go(func() {
			defer a.close()
			ok := func() bool {
				defer hsWG.Done()
				if o.rate > 0 {
					k := started.Add(1) - 1
					at := t0.Add(time.Duration(float64(k) / o.rate * float64(time.Second)))
					select {
					case <-hsCtx.Done():
						failed.Add(1)
						return false
					case <-time.After(time.Until(at)):
					}
				}
				select {
				case slots <- struct{}{}:
				case <-hsCtx.Done():
					failed.Add(1)
					return false
				}
				cr, err := a.connect(hsCtx, g)
				<-slots
				attempts.Add(int64(cr.attempts))
				cookies.Add(int64(cr.cookies))
				if err != nil {
					failed.Add(1)
					if failed.Load() <= 5 {
						fmt.Fprintf(log, "  %v\n", err)
					}
					return false
				}
				connected.Add(1)
				hsLat.add(cr.latency)
				return true
			}()
			if !ok {
				rekeyWG.Done()
				return
			}
			// Pulses only in the idle phase, so that the handshake and
			// rekey phases measure handshakes and rekeys.
			select {
			case <-life.Done():
				rekeyWG.Done()
				return
			case <-idleNow:
			}
			next := time.Now().Add(rand.N(o.pulse))
			for {
				select {
				case <-life.Done():
					rekeyWG.Done()
					return
				case <-rekeyNow:
				case <-time.After(time.Until(next)):
					next = next.Add(o.pulse)
					d, err := a.beat()
					if err != nil {
						pulsesFailed.Add(1)
						if errors.Is(err, errGatewayClosed) {
							rekeyWG.Done()
							return
						}
						continue
					}
					pulsesOK.Add(1)
					pulseLat.add(d)
					continue
				}
				break
			}
			if o.rekey {
				slots <- struct{}{}
				d, err := a.rekey()
				<-slots
				if err != nil {
					rekeysFailed.Add(1)
				} else {
					rekeysOK.Add(1)
					rekeyLat.add(d)
				}
			}
			rekeyWG.Done()
			<-life.Done()
		})
	}
	hsWG.Wait()
	hsDur := time.Since(t0)
	hsEnd, err := c.stats(false)
	if err != nil {
		return nil, err
	}
	self1 := selfCPU()
	if o.cpuProfile != "" {
		if err := c.get("/cpuprofile/stop", nil); err != nil {
			return nil, err
		}
	}
	r.Connected, r.Failed = int(connected.Load()), int(failed.Load())
	r.HandshakeSeconds = hsDur.Seconds()
	r.HandshakesPerSec = float64(r.Connected) / hsDur.Seconds()
	r.LatencyP50ms, r.LatencyP99ms = hsLat.quantile(0.50), hsLat.quantile(0.99)
	r.Attempts, r.CookieReplies = int(attempts.Load()), int(cookies.Load())
	if est := hsEnd.SessionsEstablished - base.SessionsEstablished; est > 0 {
		r.GatewayCPUPerHSus = (hsEnd.CPU() - cpu0) / float64(est) * 1e6
		r.GatewaySysPerHSus = (hsEnd.CPUSys - base.CPUSys) / float64(est) * 1e6
		r.GatewayCapacity = float64(r.NumCPU) / (r.GatewayCPUPerHSus / 1e6)
	}
	if r.Connected > 0 {
		r.AgentCPUPerHSus = (self1 - self0) / float64(r.Connected) * 1e6
	}
	r.GatewayQueueFull, r.GatewayBusy, r.GatewayRateLimited = hsEnd.HandshakeQueueFull, hsEnd.Busy, hsEnd.DropRateLimited
	r.KeepalivesInPhase = hsEnd.KeepalivesTx - base.KeepalivesTx
	if err := c.get(fmt.Sprintf("/floor?n=%d", o.floorN), &r.FloorAfterUS); err != nil {
		return nil, err
	}
	r.FloorUS = (r.FloorBeforeUS + r.FloorAfterUS) / 2
	if r.FloorUS > 0 {
		r.RatioToFloor = r.GatewayCPUPerHSus / r.FloorUS
	}
	fmt.Fprintf(log, "  %d connected, %d failed in %.1fs\n", r.Connected, r.Failed, r.HandshakeSeconds)

	// Idle: the sessions pulse; the heap is read at the end.
	fmt.Fprintf(log, "idle: %v with %d sessions...\n", o.idle, r.Connected)
	idle0, err := c.stats(false)
	if err != nil {
		return nil, err
	}
	profIdle := o.cpuProfile != ""
	if profIdle {
		abs, _ := filepath.Abs(o.cpuProfile + ".idle")
		if err := c.get("/cpuprofile/start?path="+url.QueryEscape(abs), nil); err != nil {
			return nil, err
		}
	}
	close(idleNow)
	ti := time.Now()
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The CPU is read before the two collections the heap figure needs:
	// they are the benchmark's, not the idle gateway's.
	idleEnd, err := c.stats(false)
	if err != nil {
		return nil, err
	}
	r.IdleSeconds = time.Since(ti).Seconds()
	if profIdle {
		if err := c.get("/cpuprofile/stop", nil); err != nil {
			return nil, err
		}
	}
	idle1, err := c.stats(true)
	if err != nil {
		return nil, err
	}
	r.IdleSessions = idle1.Sessions
	r.HeapIdleBytes = idle1.HeapAlloc
	if idle1.Sessions > 0 {
		r.BytesPerSession = (float64(idle1.HeapAlloc) - float64(r.HeapBaseBytes)) / float64(idle1.Sessions)
	}
	r.GatewayIdleCPUPerSec = (idleEnd.CPU() - idle0.CPU()) / r.IdleSeconds
	if n := idleEnd.PulsesAccepted - idle0.PulsesAccepted; n > 0 {
		r.GatewayCPUPerPulseUS = (idleEnd.CPU() - idle0.CPU()) / float64(n) * 1e6
	}
	if o.memProfile != "" {
		abs, _ := filepath.Abs(o.memProfile)
		if err := c.get("/heapprofile?path="+url.QueryEscape(abs), nil); err != nil {
			return nil, err
		}
	}

	if o.rekey {
		fmt.Fprintf(log, "rekeys: one per session...\n")
	}
	rk0, err := c.stats(false)
	if err != nil {
		return nil, err
	}
	profRekey := o.rekey && o.cpuProfile != ""
	if profRekey {
		abs, _ := filepath.Abs(o.cpuProfile + ".rekey")
		if err := c.get("/cpuprofile/start?path="+url.QueryEscape(abs), nil); err != nil {
			return nil, err
		}
	}
	close(rekeyNow)
	rekeyWG.Wait()
	if profRekey {
		if err := c.get("/cpuprofile/stop", nil); err != nil {
			return nil, err
		}
	}
	// Every agent has stopped pulsing (it leaves its pulse loop before it
	// rekeys and reports): the counts are final.
	r.PulsesAcked, r.PulseFailures = pulsesOK.Load(), pulsesFailed.Load()
	r.PulseP50ms, r.PulseP99ms = pulseLat.quantile(0.50), pulseLat.quantile(0.99)
	if o.rekey {
		rk1, err := c.stats(false)
		if err != nil {
			return nil, err
		}
		r.Rekeys, r.RekeyFailures = int(rekeysOK.Load()), int(rekeysFailed.Load())
		if n := rk1.Rekeys - rk0.Rekeys; n > 0 {
			r.GatewayCPUPerRKus = (rk1.CPU() - rk0.CPU()) / float64(n) * 1e6
			r.GatewaySysPerRKus = (rk1.CPUSys - rk0.CPUSys) / float64(n) * 1e6
		}
		r.RekeyP50ms, r.RekeyP99ms = rekeyLat.quantile(0.50), rekeyLat.quantile(0.99)
	}
	if r.End, err = c.stats(false); err != nil {
		return nil, err
	}
	stop()
	allWG.Wait()
	return r, nil
}

func printReport(w io.Writer, r *report) {
	fmt.Fprintf(w, "\n%d agents, %d handshakes in flight, rate %v/s, gateway workers %d, gateway CPUs %q, %d CPUs, policy %q\n",
		r.Agents, r.Concurrency, r.Rate, r.GatewayWorkers, r.GatewayCPUs, r.NumCPU, r.Policy)
	fmt.Fprintf(w, "handshakes        %d ok, %d failed, %.1f s, %.0f handshakes/s (attempts %d, cookie replies %d)\n",
		r.Connected, r.Failed, r.HandshakeSeconds, r.HandshakesPerSec, r.Attempts, r.CookieReplies)
	fmt.Fprintf(w, "latency           p50 %.1f ms, p99 %.1f ms\n", r.LatencyP50ms, r.LatencyP99ms)
	fmt.Fprintf(w, "gateway CPU       %.0f us per handshake (%.0f us of it in the kernel) -> %.0f handshakes/s on %d CPUs; agents' CPU %.0f us per handshake\n",
		r.GatewayCPUPerHSus, r.GatewaySysPerHSus, r.GatewayCapacity, r.NumCPU, r.AgentCPUPerHSus)
	fmt.Fprintf(w, "primitive floor   %.0f us (%.0f before, %.0f after the handshakes): handshake = %.2fx the floor\n",
		r.FloorUS, r.FloorBeforeUS, r.FloorAfterUS, r.RatioToFloor)
	fmt.Fprintf(w, "gateway drops     queue full %d, busy %d, rate limited %d; keepalives sent during the handshakes %d (counted in the CPU above)\n",
		r.GatewayQueueFull, r.GatewayBusy, r.GatewayRateLimited, r.KeepalivesInPhase)
	fmt.Fprintf(w, "idle              %d sessions for %.1f s: heap %d -> %d B, %.0f B per session; gateway CPU %.3f s/s\n",
		r.IdleSessions, r.IdleSeconds, r.HeapBaseBytes, r.HeapIdleBytes, r.BytesPerSession, r.GatewayIdleCPUPerSec)
	fmt.Fprintf(w, "pulses            %d acked, %d failed, p50 %.2f ms, p99 %.2f ms; gateway CPU %.0f us per pulse (idle CPU / pulses)\n",
		r.PulsesAcked, r.PulseFailures, r.PulseP50ms, r.PulseP99ms, r.GatewayCPUPerPulseUS)
	if r.Rekeys+r.RekeyFailures > 0 {
		fmt.Fprintf(w, "rekeys            %d ok, %d failed, gateway CPU %.0f us per rekey (%.0f us in the kernel), p50 %.2f ms, p99 %.2f ms\n",
			r.Rekeys, r.RekeyFailures, r.GatewayCPUPerRKus, r.GatewaySysPerRKus, r.RekeyP50ms, r.RekeyP99ms)
	}
	fmt.Fprintf(w, "gateway end       sessions %d, established %d, ended %d, dead %d, expired %d, finish refused %d, frag refused %d, pulses %d/%d refused, keepalives tx %d\n",
		r.End.Sessions, r.End.SessionsEstablished, r.End.SessionsEnded, r.End.SessionsDead, r.End.SessionsExpired,
		r.End.FinishRefused, r.End.FragRefused, r.End.PulsesAccepted, r.End.PulsesRefused, r.End.KeepalivesTx)
}
