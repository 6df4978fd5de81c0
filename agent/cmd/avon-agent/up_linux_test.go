package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/avonzt/avon/agent/enroll"
	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/agent/tunnel/tunneltest"
	"github.com/avonzt/avon/internal/netcfg"
	"github.com/avonzt/avon/internal/testsvc/netns"
)

// mainEnv makes the test binary run the command line instead of the tests,
// so that the tests can start `avon-agent up` inside a namespace.
const mainEnv = "AVON_AGENT_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// writeState lays out an enrolled agent's state directory as enroll does.
func writeState(t *testing.T, pki *tunneltest.PKI, gateway string) string {
	t.Helper()
	dir := t.TempDir()
	pemOf := func(typ string, ders ...[]byte) []byte {
		var b bytes.Buffer
		for _, d := range ders {
			_ = pem.Encode(&b, &pem.Block{Type: typ, Bytes: d})
		}
		return b.Bytes()
	}
	bj, _ := json.Marshal(enroll.Bundle{AgentID: pki.AgentID, Gateway: gateway})
	files := map[string][]byte{
		enroll.KeyFile:     pemOf("AVON ML-DSA-65 SEED", pki.AgentKey.Seed[:]),
		enroll.CertFile:    pemOf("CERTIFICATE", pki.AgentChain...),
		enroll.RootsFile:   pemOf("CERTIFICATE", pki.RootDER),
		enroll.GatewayFile: pemOf("CERTIFICATE", pki.GatewayDER),
		enroll.BundleFile:  bj,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func udp4(src, dst netip.AddrPort, payload string) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 17
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload) // UDP checksum 0: none (IPv4)
	return b
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !tunneltest.Wait(ctx, cond) {
		t.Fatalf("waiting for %s", what)
	}
}

func readStatus(dir string) *tunnel.Status {
	b, err := os.ReadFile(filepath.Join(dir, tunnel.StatusFile))
	if err != nil {
		return nil
	}
	s, _ := tunnel.ParseStatus(b)
	return s
}

// TestUpDownInNamespaces runs `avon-agent up` (engine, real TUN, netcfg) in
// one namespace against the test gateway in another, checks the interface
// configuration with ip, data both ways through the kernel, and that
// `avon-agent down` stops it and leaves nothing.
func TestUpDownInNamespaces(t *testing.T) {
	gwNS := netns.New(t, "gw")
	agNS := netns.New(t, "agent")
	netns.Link(t, gwNS, "198.18.0.1/24", agNS, "198.18.0.2/24")

	now := time.Now()
	pki, err := tunneltest.NewPKI("agent-ns", now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var g *tunneltest.Gateway
	if err := gwNS.Do(func() (err error) {
		g, err = tunneltest.New(tunneltest.Config{Bind: conn.NewStdNetBind(), Port: 4600, PKI: pki,
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.5/10"), netip.MustParsePrefix("fd7a:115c::5/64")},
			Routes:    []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("fd7a:99::/48")},
			MTU:       1380, PulseInterval: time.Second})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)

	dir := writeState(t, pki, "198.18.0.1:4600")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(mainEnv, "1")
	up := agNS.Start(t, exe, "up", "-foreground", "-state", dir, "-log-level", "debug")
	wait(t, "the tunnel up", func() bool { s := readStatus(dir); return s != nil && s.State == tunnel.StateUp })

	addrs, err := agNS.Run(t, "ip", "-j", "addr", "show", "dev", "avon0")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"100.64.0.5"`, `"fd7a:115c::5"`, `"mtu":1380`} {
		if !strings.Contains(addrs, want) {
			t.Errorf("ip addr: no %s in %s", want, addrs)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		routes, err := agNS.Run(t, "ip", "-j", fam, "route", "show", "dev", "avon0", "proto", "65")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"-4": `"10.99.0.0/16"`, "-6": `"fd7a:99::/48"`}[fam]
		if !strings.Contains(routes, want) {
			t.Errorf("ip %s route: no %s in %s", fam, want, routes)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, appliedFile)); err != nil {
		t.Errorf("applied plan not recorded: %v", err)
	}

	// Agent -> gateway through the kernel's routing and the TUN.
	var sock *net.UDPConn
	if err := agNS.Do(func() (err error) {
		sock, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(100, 64, 0, 5), Port: 5555})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	dst := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 9}
	got := false
	for try := 0; try < 50 && !got; try++ {
		if _, err := sock.WriteToUDP([]byte("through the tunnel"), dst); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-g.Inbound():
			got = bytes.HasSuffix(p, []byte("through the tunnel")) && bytes.Equal(p[12:16], []byte{100, 64, 0, 5})
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !got {
		t.Errorf("the gateway never received the agent's packet: %+v", g.Stats())
	}
	// Gateway -> agent: into the TUN, delivered to the socket.
	in := udp4(netip.MustParseAddrPort("10.99.0.1:9"), netip.MustParseAddrPort("100.64.0.5:5555"), "from the gateway")
	buf := make([]byte, 100)
	got = false
	for try := 0; try < 50 && !got; try++ {
		if err := g.SendIP(in); err != nil {
			t.Fatal(err)
		}
		_ = sock.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := sock.ReadFromUDP(buf)
		got = err == nil && string(buf[:n]) == "from the gateway"
	}
	if !got {
		t.Error("the agent's socket never received the gateway's packet")
	}

	out, err := agNS.Run(t, exe, "status", "-state", dir)
	if err != nil || !strings.Contains(out, "state:          up") || !strings.Contains(out, "100.64.0.5/10") {
		t.Errorf("status: %v\n%s", err, out)
	}

	out, err = agNS.Run(t, exe, "down", "-state", dir)
	if err != nil || !strings.Contains(out, "stopped avon-agent") {
		t.Fatalf("down: %v\n%s", err, out)
	}
	done := make(chan error, 1)
	go func() { done <- up.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("up exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("up did not exit after down")
	}
	if out, err := agNS.Run(t, "ip", "-j", "addr", "show", "to", "100.64.0.5"); err != nil || strings.Contains(out, "100.64.0.5") {
		t.Errorf("address left after down: %v %s", err, out)
	}
	for _, f := range []string{appliedFile, pidFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left after down: %v", f, err)
		}
	}
	if s := readStatus(dir); s == nil || s.State != tunnel.StateStopped {
		t.Errorf("final status %+v", s)
	}
	if c := g.Stats().Closes; c != 1 {
		t.Errorf("the gateway got %d Close messages, want 1", c)
	}
}

// TestDownRemovesCrashLeftovers: a recorded plan whose `up` is gone is
// removed by `down`, exactly: the steps recorded, nothing else.
func TestDownRemovesCrashLeftovers(t *testing.T) {
	ns := netns.New(t, "crash")
	if _, err := ns.Run(t, "ip", "link", "add", "dum0", "type", "veth", "peer", "name", "dum1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Run(t, "ip", "addr", "add", "192.0.2.99/32", "dev", "dum0"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ns.Do(func() error {
		c, err := netcfg.Open()
		if err != nil {
			return err
		}
		defer c.Close()
		a, err := c.Apply(netcfg.Plan{Dev: "dum0", MTU: 1300, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")},
			Routes: []netcfg.Route{{Dst: netip.MustParsePrefix("203.0.113.0/24")}}})
		if err != nil {
			return err
		}
		return writeApplied(dir, a.Steps())
	}); err != nil {
		t.Fatal(err)
	}
	// A stale pid file of a process long gone.
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte("999999 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(mainEnv, "1")
	out, err := ns.Run(t, exe, "down", "-state", dir)
	if err != nil || !strings.Contains(out, "removed 4 configuration steps") {
		t.Fatalf("down: %v\n%s", err, out)
	}
	addrs, _ := ns.Run(t, "ip", "-j", "addr", "show", "dev", "dum0")
	if strings.Contains(addrs, "192.0.2.7") || !strings.Contains(addrs, "192.0.2.99") || strings.Contains(addrs, `"mtu":1300`) {
		t.Errorf("after down: %s", addrs)
	}
	if routes, _ := ns.Run(t, "ip", "-j", "route", "show", "203.0.113.0/24"); strings.Contains(routes, "203.0.113.0") {
		t.Errorf("route left: %s", routes)
	}
	for _, f := range []string{appliedFile, pidFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", f, err)
		}
	}
}

func TestUpRefusesExpiredCertificate(t *testing.T) {
	if err := preflight(); err != nil {
		t.Fatalf("preflight on the test host: %v", err) // CI runs as root with /dev/net/tun
	}
	now := time.Now()
	pki, err := tunneltest.NewPKI("agent-old", now.Add(-48*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := writeState(t, pki, "192.0.2.1:4600")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"up", "-foreground", "-state", dir}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "the agent certificate expired at") {
		t.Errorf("up with an expired certificate: %d %q", code, stderr.String())
	}
	if code := run([]string{"up", "-state", t.TempDir()}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "not enrolled") {
		t.Errorf("up without enrollment: %d %q", code, stderr.String())
	}
}

func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"status", "-state", dir}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "is avon-agent up running") {
		t.Errorf("status without a file: %d %q", code, stderr.String())
	}
	st := tunnel.Status{State: tunnel.StateUp, Gateway: "192.0.2.1:4600", Interface: "avon0", Addresses: []string{"100.64.0.5/10"},
		Denials: []tunnel.Denial{{Proto: 6, Src: "100.64.0.5:1", Dst: "10.0.0.1:22", Reason: "no ssh"}}}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, tunnel.StatusFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run([]string{"status", "-state", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("status: %d %s", code, stderr.String())
	}
	// No live `up`: the state shown is stopped, with the reason.
	for _, want := range []string{"state:          stopped", "not running", "100.64.0.5/10", "no ssh"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if code := run([]string{"status", "-json", "-state", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("status -json: %d", code)
	}
	if s, err := tunnel.ParseStatus(stdout.Bytes()); err != nil || s.Gateway != "192.0.2.1:4600" {
		t.Errorf("status -json: %v %+v", err, s)
	}
	if err := os.WriteFile(filepath.Join(dir, tunnel.StatusFile), []byte(`{"state":"exploded"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"status", "-state", dir}, &stdout, &stderr); code != 1 {
		t.Errorf("status with a bad file: %d", code)
	}
	if code := run([]string{"down", "-state", t.TempDir()}, &stdout, &stderr); code != 0 {
		t.Errorf("down with nothing to do: %d %s", code, stderr.String())
	}
}
