package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/hashicorp/go-hclog"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/agent/enroll"
	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/rng"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/internal/atomicfile"
	"github.com/avonzt/avon/internal/netcfg"
	"github.com/avonzt/avon/internal/pqx509"
)

// Files of `up` in the state directory.
const (
	pidFile     = "avon-agent.pid" // "<pid> <start time in clock ticks>"
	appliedFile = "applied.json"   // the netcfg steps `up` made, for `down` after a crash
	logFile     = "avon-agent.log" // output of a background `up`
	defaultPort = 4600
	downWait    = 15 * time.Second
	// credCheck: how often `up` looks whether renew replaced the key or
	// the certificate.
	credCheck = 3 * time.Second
)

const (
	errNeedRoot = "avon-agent up needs root (CAP_NET_ADMIN)"
	errNoTun    = "no /dev/net/tun: load the tun module (modprobe tun)"
)

type upOptions struct {
	stateDir   string
	gateway    string
	iface      string
	mtu        int
	foreground bool
	logLevel   string
}

func stateFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "state", defaultStateDir, "the agent's state directory")
	fs.StringVar(p, "state-dir", defaultStateDir, "alias of -state")
}

func cmdUp(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o upOptions
	stateFlag(fs, &o.stateDir)
	fs.StringVar(&o.gateway, "gateway", "", "the gateway's host:port (default: from the enrollment bundle)")
	fs.StringVar(&o.iface, "interface", tunnel.DefaultInterface, "name of the TUN device")
	fs.IntVar(&o.mtu, "mtu", tunnel.DefaultMTU, "largest tunnel MTU")
	fs.BoolVar(&o.foreground, "foreground", false, "stay in the foreground (systemd); default: run in the background")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	if err := preflight(); err != nil {
		fmt.Fprintln(stderr, "avon-agent up:", err)
		return 1
	}
	// Check the identity before going to the background, so that errors
	// reach the terminal.
	if _, err := loadIdentity(o.stateDir, time.Now(), nil); err != nil {
		fmt.Fprintln(stderr, "avon-agent up:", err)
		return 1
	}
	if pid, ok := running(o.stateDir); ok {
		fmt.Fprintf(stderr, "avon-agent up: already running (pid %d); avon-agent down stops it\n", pid)
		return 1
	}
	if !o.foreground {
		return background(args, o, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runUp(ctx, o, stderr); err != nil {
		fmt.Fprintln(stderr, "avon-agent up:", err)
		return 1
	}
	return 0
}

// preflight checks what `up` needs from the host.
func preflight() error {
	if !netcfg.CanAdminister() {
		return errors.New(errNeedRoot)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New(errNoTun)
	}
	return nil
}

// background starts `up -foreground` detached, output to the log file, and
// waits until it wrote its pid file or died.
func background(args []string, o upOptions, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent up:", err)
		return 1
	}
	logf, err := os.OpenFile(filepath.Join(o.stateDir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent up:", err)
		return 1
	}
	defer logf.Close()
	cmd := exec.Command(exe, append([]string{"up", "-foreground"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "avon-agent up:", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-exited:
			fmt.Fprintf(stderr, "avon-agent up: the background agent exited (%v); see %s\n", err, filepath.Join(o.stateDir, logFile))
			return 1
		case <-deadline:
			fmt.Fprintln(stderr, "avon-agent up: the background agent did not start within 10s")
			return 1
		case <-time.After(50 * time.Millisecond):
			if pid, ok := running(o.stateDir); ok {
				fmt.Fprintf(stdout, "avon-agent running in the background (pid %d); avon-agent status shows the tunnel\n", pid)
				return 0
			}
		}
	}
}

// identity is what the engine needs from the state directory.
type identity struct {
	signer  *handshake.MLDSA65Signer
	chain   [][]byte
	gwKey   []byte
	gateway string
	leaf    *pqx509.Certificate
}

func readPEM(path, typ string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		if blk.Type == typ {
			out = append(out, blk.Bytes)
		}
	}
	clear(b)
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no %s", path, typ)
	}
	return out, nil
}

// loadIdentity reads the enrollment from dir and checks it at now. With
// rnd nil it only checks (no signer is made).
func loadIdentity(dir string, now time.Time, rnd io.Reader) (*identity, error) {
	if _, err := os.Stat(filepath.Join(dir, enroll.KeyFile)); err != nil {
		return nil, fmt.Errorf("not enrolled (%v): run avon-agent enroll first", err)
	}
	chain, err := readPEM(filepath.Join(dir, enroll.CertFile), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	leaf, err := pqx509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("agent certificate: %w", err)
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("the agent certificate expired at %s: run avon-agent renew --force, or enroll again",
			leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("the agent certificate is not valid before %s: check the system clock", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	gws, err := readPEM(filepath.Join(dir, enroll.GatewayFile), "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("no gateway certificate from the enrollment: %w", err)
	}
	gw, err := pqx509.ParseCertificate(gws[0])
	if err != nil {
		return nil, fmt.Errorf("gateway certificate: %w", err)
	}
	if gw.PublicKey.Algorithm != pqx509.MLDSA65 {
		return nil, fmt.Errorf("gateway certificate key is %s, want %s", gw.PublicKey.Algorithm, pqx509.MLDSA65)
	}
	var b enroll.Bundle
	bj, err := os.ReadFile(filepath.Join(dir, enroll.BundleFile))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(bj, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", enroll.BundleFile, err)
	}
	// The handshake carries at most handshake.MaxChainLen bytes of chain:
	// with an issuing CA signed by an ML-DSA-87 root the whole chain is
	// larger, so the leaf goes alone and the gateway, which knows its
	// CA's issuers, completes the path.
	if n := chainLen(chain); n > handshake.MaxChainLen {
		chain = chain[:1]
	}
	id := &identity{chain: chain, gwKey: gw.PublicKey.Raw, gateway: b.Gateway, leaf: leaf}
	if rnd == nil {
		return id, nil
	}
	seeds, err := readPEM(filepath.Join(dir, enroll.KeyFile), "AVON ML-DSA-65 SEED")
	if err != nil {
		return nil, err
	}
	defer clear(seeds[0])
	if len(seeds[0]) != mldsa65.SeedSize {
		return nil, fmt.Errorf("agent key: %d bytes, want a %d-byte seed", len(seeds[0]), mldsa65.SeedSize)
	}
	var sd [mldsa65.SeedSize]byte
	copy(sd[:], seeds[0])
	pk, sk := mldsa65.NewKeyFromSeed(&sd)
	clear(sd[:])
	raw, _ := pk.MarshalBinary()
	if !leaf.PublicKey.Equal(pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: raw}) {
		return nil, errors.New("the stored key is not the certificate's key; enroll again")
	}
	if id.signer, err = handshake.NewMLDSA65Signer(sk, rnd); err != nil {
		return nil, err
	}
	return id, nil
}

// fileStamp tells one version of the key and certificate files from
// another: renew replaces them atomically (a new inode, mtime, size).
type fileStamp [2]struct{ ino, size, mod int64 }

func stampOf(dir string) (fileStamp, error) {
	var st fileStamp
	for i, name := range []string{enroll.KeyFile, enroll.CertFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fileStamp{}, err
		}
		st[i].size, st[i].mod = fi.Size(), fi.ModTime().UnixNano()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st[i].ino = int64(sys.Ino)
		}
	}
	return st, nil
}

// credSource is the engine's Config.Credentials: the key and chain of the
// state directory, loaded again when renew replaced the files. The engine
// calls it from its main loop, once per handshake, so the signer it
// replaces is no longer in use.
type credSource struct {
	dir string
	rnd io.Reader
	log hclog.Logger

	mu    sync.Mutex // guards id and stamp
	id    *identity
	stamp fileStamp
}

// newCredSource loads the identity of dir.
func newCredSource(dir string, rnd io.Reader, log hclog.Logger) (*credSource, error) {
	st, err := stampOf(dir)
	if err != nil {
		return nil, err
	}
	id, err := loadIdentity(dir, time.Now(), rnd)
	if err != nil {
		return nil, err
	}
	return &credSource{dir: dir, rnd: rnd, log: log, id: id, stamp: st}, nil
}

// identity returns the identity loaded last.
func (c *credSource) identity() *identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// credentials reloads the key and chain when the files changed since they
// were loaded. A reload that fails (renew is between its two writes, the
// new certificate is not valid yet) fails this handshake; the next one
// tries again.
func (c *credSource) credentials() (handshake.Signer, [][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, err := stampOf(c.dir); err == nil && st != c.stamp {
		id, err := loadIdentity(c.dir, time.Now(), c.rnd)
		if err != nil {
			return nil, nil, fmt.Errorf("reload the renewed key and certificate: %w", err)
		}
		c.id.signer.Close()
		c.id, c.stamp = id, st
		c.log.Info("renewed certificate loaded", "serial", id.leaf.SerialNumber.Text(16),
			"not_after", id.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return c.id.signer, c.id.chain, nil
}

func (c *credSource) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id.signer.Close()
}

// watchCredentials asks eng for a new handshake whenever the key or
// certificate files change, every interval until ctx ends.
func watchCredentials(ctx context.Context, dir string, interval time.Duration, eng *tunnel.Engine) {
	last, _ := stampOf(dir)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := stampOf(dir)
		if err != nil || st == last {
			continue
		}
		last = st
		eng.Rehandshake("certificate changed")
	}
}

func chainLen(chain [][]byte) int {
	n := 0
	for _, c := range chain {
		n += len(c)
	}
	return n
}

// resolveGateway turns host[:port] into an address (port 4600 by default).
func resolveGateway(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("no gateway: give -gateway host:port (the bundle names none)")
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(strings.Trim(s, "[]"), strconv.Itoa(defaultPort))
	}
	ua, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("gateway %s: %w", s, err)
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// applier applies SessionConfigs to the TUN device through netcfg and
// records what it changed in the state directory.
type applier struct {
	c       *netcfg.Conn
	dir     string
	dev     string
	plan    netcfg.Plan
	applied *netcfg.Applied
	log     hclog.Logger
}

func (a *applier) apply(sc control.SessionConfig) error {
	p := netcfg.Plan{Dev: a.dev, MTU: int(sc.MTU), Addrs: sc.Addresses, Up: true}
	for _, r := range sc.Routes {
		onLink := false
		for _, ad := range sc.Addresses {
			if ad.Masked() == r {
				onLink = true // the kernel added it with the address
			}
		}
		if !onLink {
			p.Routes = append(p.Routes, netcfg.Route{Dst: r})
		}
	}
	if a.applied != nil && reflect.DeepEqual(p, a.plan) {
		return nil
	}
	if err := a.undo(); err != nil {
		return err
	}
	applied, err := a.c.Apply(p)
	if err != nil {
		return err
	}
	a.applied, a.plan = applied, p
	a.log.Info("interface configured", "dev", a.dev, "addresses", sc.Addresses, "routes", sc.Routes, "mtu", sc.MTU)
	return writeApplied(a.dir, applied.Steps())
}

func (a *applier) undo() error {
	if a.applied == nil {
		return nil
	}
	err := a.applied.Undo()
	if steps := a.applied.Steps(); len(steps) > 0 {
		_ = writeApplied(a.dir, steps)
		return fmt.Errorf("remove the interface configuration: %w", err)
	}
	a.applied, a.plan = nil, netcfg.Plan{}
	return removeApplied(a.dir)
}

func writeApplied(dir string, steps []netcfg.Step) error {
	b, err := json.MarshalIndent(steps, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, appliedFile), b, 0o600)
}

func removeApplied(dir string) error {
	if err := os.Remove(filepath.Join(dir, appliedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// undoRecorded removes what a previous `up` recorded and did not remove
// (it crashed or was killed): newest first; what is already gone counts as
// removed. The file is deleted once everything is undone.
func undoRecorded(c *netcfg.Conn, dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, appliedFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var steps []netcfg.Step
	if err := json.Unmarshal(b, &steps); err != nil {
		return 0, fmt.Errorf("%s: %w", appliedFile, err)
	}
	if len(steps) > 1024 {
		return 0, fmt.Errorf("%s: %d steps", appliedFile, len(steps))
	}
	var errs []error
	var kept []netcfg.Step
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		var err error
		switch s.Kind {
		case netcfg.StepRoute:
			err = c.DelRoute(s.Route)
		case netcfg.StepAddr:
			err = c.DelAddr(s.Dev, s.Addr)
		case netcfg.StepUp:
			err = c.SetLinkUp(s.Dev, false)
		case netcfg.StepMTU:
			err = c.SetMTU(s.Dev, s.PrevMTU)
		default:
			err = fmt.Errorf("unknown step kind %d", s.Kind)
		}
		if err != nil && !errors.Is(err, netcfg.ErrNotFound) {
			errs = append(errs, err)
			kept = append([]netcfg.Step{s}, kept...)
		}
	}
	if len(kept) > 0 {
		_ = writeApplied(dir, kept)
		return len(steps) - len(kept), errors.Join(errs...)
	}
	return len(steps), removeApplied(dir)
}

// localAddrs lists the host's addresses outside the tunnel device, for
// roaming detection.
func localAddrs(skip string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		var out []netip.Addr
		for _, ifc := range ifs {
			if ifc.Name == skip || ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsGlobalUnicast() {
					out = append(out, p.Addr())
				}
			}
		}
		return out, nil
	}
}

// runUp is `up -foreground`: the engine on a real TUN and UDP bind until
// ctx ends, the interface configured through netcfg and unconfigured on
// the way out.
func runUp(ctx context.Context, o upOptions, stderr io.Writer) error {
	log := hclog.New(&hclog.LoggerOptions{Name: "avon-agent", Level: hclog.LevelFromString(o.logLevel), Output: stderr})
	gen, err := rng.New(rng.DefaultConfig())
	if err != nil {
		return fmt.Errorf("rng: %w", err)
	}
	defer gen.Close()
	cs, err := newCredSource(o.stateDir, gen, log)
	if err != nil {
		return err
	}
	defer cs.close()
	id := cs.identity()
	gwName := o.gateway
	if gwName == "" {
		gwName = id.gateway
	}
	gw, err := resolveGateway(gwName)
	if err != nil {
		return err
	}
	if err := writePID(o.stateDir); err != nil {
		return err
	}
	defer removePID(o.stateDir)
	nc, err := netcfg.Open()
	if err != nil {
		return err
	}
	defer nc.Close()
	if n, err := undoRecorded(nc, o.stateDir); err != nil {
		return fmt.Errorf("leftover configuration of an earlier run: %w", err)
	} else if n > 0 {
		log.Info("removed the configuration an earlier run left", "steps", n)
	}
	dev, err := tun.CreateTUN(o.iface, o.mtu)
	if err != nil {
		return fmt.Errorf("create tun %s: %w", o.iface, err)
	}
	ap := &applier{c: nc, dir: o.stateDir, dev: o.iface, log: log}
	eng, err := tunnel.New(tunnel.Config{Gateway: gw, Credentials: cs.credentials, GatewayPublicKey: id.gwKey,
		Rand: gen, Logger: log, Interface: o.iface, MTU: o.mtu, StateDir: o.stateDir, OnConfig: ap.apply,
		AgentVersion: version, LocalAddrs: localAddrs(o.iface)}, dev, conn.NewStdNetBind())
	if err != nil {
		_ = dev.Close()
		return err
	}
	log.Info("starting", "gateway", gw, "interface", o.iface, "agent", id.leaf.Subject.CommonName)
	wctx, wcancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchCredentials(wctx, o.stateDir, credCheck, eng)
	}()
	runErr := eng.Run(ctx)
	wcancel()
	<-watched
	undoErr := ap.undo()
	return errors.Join(runErr, undoErr)
}

// procStart returns the start time of pid (clock ticks since boot), to
// tell a live process from a reused pid.
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

func writePID(dir string) error {
	pid := os.Getpid()
	st, _ := procStart(pid)
	return atomicfile.Write(filepath.Join(dir, pidFile), []byte(fmt.Sprintf("%d %d\n", pid, st)), 0o644)
}

func removePID(dir string) { _ = os.Remove(filepath.Join(dir, pidFile)) }

// running returns the pid of a live `up` recorded in dir.
func running(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil || len(b) > 64 {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 1 {
		return 0, false
	}
	if st, ok := procStart(pid); !ok || st != start {
		return 0, false
	}
	return pid, true
}

func cmdDown(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir string
	stateFlag(fs, &dir)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	if pid, ok := running(dir); ok {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			fmt.Fprintf(stderr, "avon-agent down: signal pid %d: %v\n", pid, err)
			return 1
		}
		stopped := false
		for end := time.Now().Add(downWait); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if _, ok := running(dir); !ok {
				stopped = true
				break
			}
		}
		if !stopped {
			fmt.Fprintf(stderr, "avon-agent down: pid %d still running after %s\n", pid, downWait)
			return 1
		}
		fmt.Fprintf(stdout, "stopped avon-agent (pid %d)\n", pid)
	} else {
		removePID(dir) // stale
	}
	if _, err := os.Stat(filepath.Join(dir, appliedFile)); err == nil {
		nc, err := netcfg.Open()
		if err != nil {
			fmt.Fprintln(stderr, "avon-agent down:", err)
			return 1
		}
		defer nc.Close()
		n, err := undoRecorded(nc, dir)
		if err != nil {
			fmt.Fprintln(stderr, "avon-agent down:", err)
			return 1
		}
		fmt.Fprintf(stdout, "removed %d configuration steps left by an earlier run\n", n)
	}
	return 0
}
