package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/internal/testsvc/netns"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
	"github.com/avonzt/avon/sdk/plugintest"
)

// replica is one `avon server` process of TestTwoReplicas, in its own
// network namespace, restartable with the same configuration.
type replica struct {
	t    *testing.T
	name string
	ns   *netns.NS
	bin  string
	cfg  string
	ctx  context.Context

	cmd  *exec.Cmd
	done chan error
	log  *syncBuf
	logs []*syncBuf
}

func (r *replica) start() {
	r.t.Helper()
	r.log = &syncBuf{}
	r.logs = append(r.logs, r.log)
	r.cmd = r.ns.Command(r.ctx, r.bin, "server", "-config", r.cfg)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func(c *exec.Cmd) { done <- c.Wait() }(r.cmd)
	r.done = done
	if _, ok := poll(120*time.Second, func() bool { return strings.Contains(r.log.String(), "avon core started") }); !ok {
		r.t.Fatalf("replica %s did not start within 120 s", r.name)
	}
	if !strings.Contains(r.log.String(), "gateway started") {
		r.t.Fatalf("replica %s started without its gateway", r.name)
	}
}

// stop ends the replica with SIGTERM and waits for it (a bounded wait).
func (r *replica) stop() {
	r.t.Helper()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.cmd = nil
		if err != nil {
			r.t.Fatalf("replica %s exit: %v", r.name, err)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatalf("replica %s did not stop within 30 s of SIGTERM", r.name)
	}
}

// kill ends the replica at once (the test's cleanup).
func (r *replica) kill() {
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
	}
	r.cmd = nil
}

// origin is the replica name its rows carry (host/pid of the running
// process: `ip netns exec` execs the core in place).
func (r *replica) origin() string {
	h, _ := os.Hostname()
	return h + "/" + strconv.Itoa(r.cmd.Process.Pid)
}

// cli runs the avon CLI against this replica (its admin socket, a file
// reachable from any namespace).
func (r *replica) cli(args ...string) (string, error) {
	out, err := exec.Command(r.bin, append(args, "-config", r.cfg)...).CombinedOutput()
	return string(out), err
}

// sessions lists the sessions this replica reports (every replica's).
func (r *replica) sessions() ([]server.SessionInfo, error) {
	out, err := exec.Command(r.bin, "session", "list", "-o", "json", "-config", r.cfg).Output()
	if err != nil {
		return nil, fmt.Errorf("session list on %s: %w", r.name, err)
	}
	var l []server.SessionInfo
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("session list on %s: %w: %s", r.name, err, out)
	}
	return l, nil
}

// TestTwoReplicas runs two `avon server` replicas sharing one PostgreSQL
// (storage "postgres", over its unix socket) and one redis-server (cache
// "redis", in a namespace of its own reached over veth links), each with
// its gateway in its own network namespace, and kms-soft's keystore in
// the shared storage (backend = "storage": see docs/operations.md,
// "Running several replicas"). One agent connects to replica B; everything
// the operator does goes through replica A:
//
//  1. `avon session list` on A shows the agent's session on B, naming B;
//  2. `avon session kill` on A ends it on B (the agent reports the reason
//     and reconnects with a new session), timed and logged;
//  3. `avon agent disable` on A makes B refuse the agent until enable;
//  4. A stopped, B keeps serving its session and lists it; A restarted
//     lists it again;
//  5. `avon cert revoke` on the restarted A ends the session on B.
func TestTwoReplicas(t *testing.T) {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(netns.RequireEnv) == "1" {
			t.Fatalf("redis-server not found (required: %s=1): %v", netns.RequireEnv, err)
		}
		t.Skipf("redis-server not found: %v", err)
	}
	gwA := netns.New(t, "gwa")
	gwB := netns.New(t, "gwb")
	db := netns.New(t, "db")
	ag := netns.New(t, "agent")
	netns.Link(t, gwA, "198.18.30.1/24", db, "198.18.30.2/24")
	netns.Link(t, gwB, "198.18.31.1/24", db, "198.18.31.2/24")
	netns.Link(t, gwB, "198.18.32.1/24", ag, "198.18.32.2/24")
	pg := pgtest.Start(t)
	dsnDB := strings.TrimSuffix(strings.TrimPrefix(pg.CreateDatabase(t, "replicas"), "postgres://"+pgtest.Superuser+"@"+pg.Addr()+"/"), "?sslmode=disable")

	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	agentBin := plugintest.Build(t, "github.com/avonzt/avon/agent/cmd/avon-agent")
	kmsBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	caBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// redis-server in db, reachable from both gateways' namespaces.
	redisLog := &syncBuf{}
	redis := db.Command(ctx, redisBin, "--port", "6379", "--bind", "198.18.30.2 198.18.31.2", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir)
	redis.Stdout, redis.Stderr = redisLog, redisLog
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	redisDone := make(chan struct{})
	go func() { _ = redis.Wait(); close(redisDone) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-redis.Process.Pid, syscall.SIGKILL)
		<-redisDone
	})
	if _, ok := poll(30*time.Second, func() bool {
		return gwA.Do(func() error {
			c, err := net.DialTimeout("tcp", "198.18.30.2:6379", time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}); !ok {
		t.Fatalf("redis-server does not listen in db: %s", redisLog.String())
	}

	// The shared keystore: kms-soft keeps it in the replicas' storage
	// (PostgreSQL); both open it with the same passphrase (an operator
	// gives it as env("..."); a literal here). Whichever replica starts
	// first creates it, the other opens what it made.
	const kmsPassphrase = "two replicas, one keystore"
	newReplica := func(name, gwAddr, redisAddr, iface string) *replica {
		cfg := filepath.Join(dir, name+".hcl")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir  = %q
log_level = "debug"
api {
  listen = "%s:8443"
}
storage "postgres" {
  dsn = "host=%s port=%d user=%s dbname=%s sslmode=disable"
}
cache "redis" {
  addr = %q
}
gateway {
  listen         = "0.0.0.0:4600"
  endpoint       = "%s:4600"
  tunnel_cidr    = "100.98.0.0/16"
  interface      = %q
  pulse_interval = "2s"
}
plugin "kms" "soft" {
  command = %q
  sha256  = %q
  config {
    passphrase      = %q
    backend         = "storage"
    kdf_time        = 2
    kdf_memory_kib  = 19456
    kdf_threads     = 1
  }
}
plugin "ca" "dilithium" {
  command = %q
  sha256  = %q
  uses    = { kms = "soft" }
}
`, filepath.Join(dir, name), gwAddr, pg.Dir(), pg.Port(), pgtest.Superuser, dsnDB, redisAddr, gwAddr, iface,
			kmsBin.Path, kmsBin.SHA256, kmsPassphrase,
			caBin.Path, caBin.SHA256)), 0o600); err != nil {
			t.Fatal(err)
		}
		return &replica{t: t, name: name, ns: map[string]*netns.NS{"a": gwA, "b": gwB}[name], bin: avon.Path, cfg: cfg, ctx: ctx}
	}
	a := newReplica("a", "198.18.30.1", "198.18.30.2:6379", "avon-ra")
	b := newReplica("b", "198.18.32.1", "198.18.31.2:6379", "avon-rb")
	state := filepath.Join(dir, "agent")
	t.Cleanup(func() {
		_, _ = ag.Run(t, agentBin.Path, "down", "-state", state)
		a.kill()
		b.kill()
		if t.Failed() {
			for _, r := range []*replica{a, b} {
				for i, l := range r.logs {
					t.Logf("replica %s log (run %d):\n%s", r.name, i+1, l.String())
				}
			}
			if b, err := os.ReadFile(filepath.Join(state, "avon-agent.log")); err == nil {
				t.Logf("agent log:\n%s", b)
			}
		}
	})
	a.start()
	b.start()
	m := regexp.MustCompile(`api certificate: sha256=([0-9a-f]{64})`).FindStringSubmatch(b.log.String())
	if m == nil {
		t.Fatal("no API fingerprint in replica b's log")
	}

	// A token from A; the agent enrolls with B and connects to B.
	tokOut, err := a.cli("token", "create", "-group", "eng", "-o", "json")
	var tok server.TokenCreated
	if err != nil || json.Unmarshal([]byte(tokOut), &tok) != nil {
		t.Fatalf("token create on a: %v %s", err, tokOut)
	}
	enrollCmd := ag.Command(ctx, agentBin.Path, "enroll", "--server", "https://198.18.32.1:8443", "--server-fingerprint", m[1], "--state-dir", state)
	enrollCmd.Env = append(os.Environ(), "AVON_ENROLL_TOKEN="+tok.Token)
	if out, err := enrollCmd.CombinedOutput(); err != nil {
		t.Fatalf("avon-agent enroll with b: %v\n%s", err, out)
	}
	certPEM, err := os.ReadFile(filepath.Join(state, "agent.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatal("agent.crt holds no PEM block")
	}
	leaf, err := pqx509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	serial := fmt.Sprintf("%x", leaf.SerialNumber)
	if out, err := ag.Run(t, agentBin.Path, "up", "-state", state, "-log-level", "debug"); err != nil {
		t.Fatalf("avon-agent up: %v\n%s", err, out)
	}
	type agentStatus struct {
		State      string `json:"state"`
		LastError  string `json:"last_error"`
		Handshakes int    `json:"handshakes"`
	}
	status := func() agentStatus {
		out, err := ag.Run(t, agentBin.Path, "status", "-state", state, "-json")
		var s agentStatus
		if err != nil || json.Unmarshal([]byte(out), &s) != nil {
			return agentStatus{State: "unreadable"}
		}
		return s
	}
	// onB waits until r lists exactly one session, held by B, other than
	// not (when not is set), with the agent up; it returns that session.
	onB := func(r *replica, d time.Duration, not string) server.SessionInfo {
		t.Helper()
		var (
			last    []server.SessionInfo
			lastErr error
		)
		took, ok := poll(d, func() bool {
			last, lastErr = r.sessions()
			return lastErr == nil && len(last) == 1 && last[0].ID != not && last[0].Replica == b.origin() && status().State == "up"
		})
		if !ok {
			t.Fatalf("replica %s lists %+v (error %v) after %s, want one session on %s other than %q; agent %+v",
				r.name, last, lastErr, took, b.origin(), not, status())
		}
		return last[0]
	}

	// 1. A lists the session held by B.
	first := onB(a, 90*time.Second, "")
	if first.AgentID == "" || first.Address == "" || first.Since.IsZero() || first.Endpoint == "" {
		t.Fatalf("session as A lists it: %+v", first)
	}
	if l, err := b.sessions(); err != nil || len(l) != 1 || l[0].ID != first.ID {
		t.Fatalf("B lists %+v (%v), want %s", l, err, first.ID)
	}

	// 2. Kill through A: B ends the session, the agent hears why.
	killed := time.Now()
	if out, err := a.cli("session", "kill", first.ID, "-reason", "maintenance"); err != nil || !strings.Contains(out, "not live on this replica") ||
		!strings.Contains(out, "every replica told: true") {
		t.Fatalf("session kill on a: %v %s", err, out)
	}
	if _, ok := poll(30*time.Second, func() bool {
		return strings.Contains(status().LastError, "session killed by an operator: maintenance")
	}); !ok {
		t.Fatalf("the agent did not report the kill: %+v", status())
	}
	t.Logf("kill through A ended the session on B: the agent reported it %s after avon session kill started",
		time.Since(killed).Round(time.Millisecond))
	if at, ok := loggedAt(b.log.String(), `event applied: kind=session\.killed`); ok {
		t.Logf("kill through A: replica B applied the event %s after avon session kill started", at.Sub(killed).Round(time.Millisecond))
	}
	if !regexp.MustCompile(`event applied: kind=session\.killed .*sessions=1`).MatchString(b.log.String()) {
		t.Error("replica b did not log the session.killed event ending the session")
	}
	second := onB(a, 60*time.Second, first.ID)

	// 3. Disable through A: B ends the session and refuses the agent.
	if out, err := a.cli("agent", "disable", first.AgentID, "-reason", "lost laptop"); err != nil {
		t.Fatalf("agent disable on a: %v %s", err, out)
	}
	if _, ok := poll(30*time.Second, func() bool { return status().State != "up" }); !ok {
		t.Fatal("the agent is still up 30 s after the disable on a")
	}
	if _, ok := poll(60*time.Second, func() bool {
		return strings.Contains(b.log.String(), "agent disabled by an operator") && strings.Contains(status().LastError, "not")
	}); !ok {
		t.Fatalf("replica b refused no reconnection: status %+v", status())
	}
	if _, ok := poll(30*time.Second, func() bool { l, err := a.sessions(); return err == nil && len(l) == 0 }); !ok {
		l, err := a.sessions()
		t.Fatalf("a disabled agent still has sessions: %+v %v", l, err)
	}
	if out, err := a.cli("agent", "enable", first.AgentID); err != nil {
		t.Fatalf("agent enable on a: %v %s", err, out)
	}
	third := onB(a, 120*time.Second, second.ID)

	// 4. A stops: B keeps serving; A restarts and sees the session again.
	hs := status().Handshakes
	a.stop()
	if l, err := b.sessions(); err != nil || len(l) != 1 || l[0].ID != third.ID {
		t.Fatalf("B lists %+v (%v) with A stopped, want %s", l, err, third.ID)
	}
	if err := ag.Ping(t, "100.98.0.1", 3); err != nil {
		t.Fatalf("ping to B's tunnel address with A stopped: %v", err)
	}
	if s := status(); s.State != "up" || s.Handshakes != hs {
		t.Fatalf("the agent's session moved while A was stopped: %+v (handshakes were %d)", s, hs)
	}
	a.start()
	if got := onB(a, 60*time.Second, ""); got.ID != third.ID {
		t.Fatalf("the restarted A lists %s, want %s", got.ID, third.ID)
	}

	// 5. Revoke through the restarted A: B ends the session.
	revoked := time.Now()
	if out, err := a.cli("cert", "revoke", serial, "-reason", "keyCompromise"); err != nil {
		t.Fatalf("cert revoke on a: %v\n%s", err, out)
	}
	if _, ok := poll(30*time.Second, func() bool { return status().State != "up" }); !ok {
		t.Fatal("the tunnel is still up 30 s after the revocation on a")
	}
	t.Logf("revocation through A ended the session on B %s after avon cert revoke started", time.Since(revoked).Round(time.Millisecond))
	if at, ok := loggedAt(b.log.String(), `event applied: kind=cert\.revoked`); ok {
		t.Logf("revocation through A: replica B applied the event %s after avon cert revoke started", at.Sub(revoked).Round(time.Millisecond))
	}
	if !regexp.MustCompile(`event applied: kind=cert\.revoked .*sessions=1`).MatchString(b.log.String()) {
		t.Error("replica b did not end the session on the cert.revoked event")
	}
	if _, ok := poll(30*time.Second, func() bool { l, err := a.sessions(); return err == nil && len(l) == 0 }); !ok {
		l, err := a.sessions()
		t.Fatalf("a revoked agent still has sessions: %+v %v", l, err)
	}
	b.stop()
	a.stop()
}

// loggedAt returns the time stamp of the last line of an hclog text log
// matching re.
func loggedAt(log, re string) (time.Time, bool) {
	m := regexp.MustCompile(`(?m)^(\S+) \[[A-Z]+\] *[^:]*: `+re).FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, m[len(m)-1][1])
	return at, err == nil
}
