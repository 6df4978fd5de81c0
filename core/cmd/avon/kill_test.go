package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/internal/testsvc/netns"
	"github.com/avonzt/avon/sdk/plugintest"
)

// TestSessionKillAndAgentDisable runs the real binaries across two
// network namespaces, as TestTunnelEndToEnd does: `avon server` with its
// gateway in gw, `avon-agent` in agent. `avon session list` shows the
// agent's session; `avon session kill` ends it (the agent reports the
// operator's reason and reconnects with a new session); `avon agent
// disable` ends its session and the gateway refuses its reconnections until
// `avon agent enable`.
func TestSessionKillAndAgentDisable(t *testing.T) {
	gw := netns.New(t, "gw")
	ag := netns.New(t, "agent")
	netns.Link(t, gw, "198.18.3.1/24", ag, "198.18.3.2/24")

	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	agentBin := plugintest.Build(t, "github.com/avonzt/avon/agent/cmd/avon-agent")
	kmsBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	caBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir  = %q
log_level = "debug"
api {
  listen = "198.18.3.1:8443"
}
gateway {
  listen         = "0.0.0.0:4600"
  endpoint       = "198.18.3.1:4600"
  tunnel_cidr    = "100.97.0.0/16"
  interface      = "avon-gw3"
  pulse_interval = "2s"
}
plugin "kms" "soft" {
  command = %q
  sha256  = %q
  config {
    key_file        = "k"
    create_key_file = true
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
`, filepath.Join(dir, "data"), kmsBin.Path, kmsBin.SHA256, caBin.Path, caBin.SHA256)), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "agent")

	coreLog := &syncBuf{}
	coreCtx, killCore := context.WithTimeout(context.Background(), 5*time.Minute)
	defer killCore()
	core := gw.Command(coreCtx, avon.Path, "server", "-config", cfg)
	core.Stdout, core.Stderr = coreLog, coreLog
	if err := core.Start(); err != nil {
		t.Fatal(err)
	}
	coreDone := make(chan error, 1)
	go func() { coreDone <- core.Wait() }()
	t.Cleanup(func() {
		_, _ = ag.Run(t, agentBin.Path, "down", "-state", state)
		_ = core.Process.Signal(syscall.SIGTERM)
		select {
		case <-coreDone:
		case <-time.After(30 * time.Second):
			killCore()
			<-coreDone
		}
		if t.Failed() {
			t.Logf("core log:\n%s", coreLog.String())
			if b, err := os.ReadFile(filepath.Join(state, "avon-agent.log")); err == nil {
				t.Logf("agent log:\n%s", b)
			}
		}
	})
	if _, ok := poll(90*time.Second, func() bool { return strings.Contains(coreLog.String(), "avon core started") }); !ok {
		t.Fatal("the core did not start within 90 s")
	}
	m := regexp.MustCompile(`api certificate: sha256=([0-9a-f]{64})`).FindStringSubmatch(coreLog.String())
	if m == nil {
		t.Fatal("no API fingerprint in the core's log")
	}

	// The CLI reaches the core over its admin socket (a file, so from any
	// network namespace).
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(avon.Path, append(args, "-config", cfg)...).CombinedOutput()
		return string(out), err
	}
	tokOut, err := exec.Command(avon.Path, "token", "create", "-group", "eng", "-o", "json", "-config", cfg).Output()
	var tok server.TokenCreated
	if err != nil || json.Unmarshal(tokOut, &tok) != nil {
		t.Fatalf("token create: %v %s", err, tokOut)
	}
	enrollCmd := ag.Command(coreCtx, agentBin.Path, "enroll", "--server", "https://198.18.3.1:8443", "--server-fingerprint", m[1], "--state-dir", state)
	enrollCmd.Env = append(os.Environ(), "AVON_ENROLL_TOKEN="+tok.Token)
	if out, err := enrollCmd.CombinedOutput(); err != nil {
		t.Fatalf("avon-agent enroll: %v\n%s", err, out)
	}
	if out, err := ag.Run(t, agentBin.Path, "up", "-state", state, "-log-level", "debug"); err != nil {
		t.Fatalf("avon-agent up: %v\n%s", err, out)
	}
	type agentStatus struct {
		State     string `json:"state"`
		LastError string `json:"last_error"`
	}
	status := func() agentStatus {
		out, err := ag.Run(t, agentBin.Path, "status", "-state", state, "-json")
		var s agentStatus
		if err != nil || json.Unmarshal([]byte(out), &s) != nil {
			return agentStatus{State: "unreadable"}
		}
		return s
	}
	sessions := func() []server.SessionInfo {
		out, err := exec.Command(avon.Path, "session", "list", "-o", "json", "-config", cfg).Output()
		var l []server.SessionInfo
		if err != nil || json.Unmarshal(out, &l) != nil {
			t.Fatalf("session list: %v %s", err, out)
		}
		return l
	}
	if took, ok := poll(60*time.Second, func() bool { return status().State == "up" && len(sessions()) == 1 }); !ok {
		t.Fatalf("no session %s after up: status %+v", took, status())
	}
	first := sessions()[0]
	agentsOut, _ := cli("agent", "list")
	if !strings.Contains(agentsOut, first.AgentID) || first.Address == "" || first.Since.IsZero() || first.Endpoint == "" {
		t.Fatalf("session %+v, agents:\n%s", first, agentsOut)
	}

	// Kill: the agent hears the reason; it reconnects with a new session.
	killed := time.Now()
	if out, err := cli("session", "kill", first.ID, "-reason", "maintenance"); err != nil || !strings.Contains(out, "ended on this replica") {
		t.Fatalf("session kill: %v %s", err, out)
	}
	took, ok := poll(15*time.Second, func() bool { return strings.Contains(status().LastError, "session killed by an operator: maintenance") })
	if !ok {
		t.Fatalf("the agent did not report the kill: %+v", status())
	}
	t.Logf("agent reported the kill %s after avon session kill returned (%s after it started)", took.Round(time.Millisecond),
		time.Since(killed).Round(time.Millisecond))
	if _, ok := poll(30*time.Second, func() bool {
		l := sessions()
		return len(l) == 1 && l[0].ID != first.ID && status().State == "up"
	}); !ok {
		t.Fatalf("no new session after the kill: %+v %+v", sessions(), status())
	}

	// Disable: the session ends and the agent is refused until enabled.
	disabled := time.Now()
	if out, err := cli("agent", "disable", first.AgentID, "-reason", "lost laptop"); err != nil {
		t.Fatalf("agent disable: %v %s", err, out)
	}
	if took, ok := poll(15*time.Second, func() bool { return status().State != "up" }); !ok {
		t.Fatalf("the agent is still up %s after the disable", took)
	}
	t.Logf("agent left state up %s after avon agent disable started", time.Since(disabled).Round(time.Millisecond))
	if _, ok := poll(30*time.Second, func() bool {
		return strings.Contains(coreLog.String(), "agent disabled by an operator") && strings.Contains(status().LastError, "not")
	}); !ok {
		t.Fatalf("no refused reconnection: status %+v", status())
	}
	if l := sessions(); len(l) != 0 {
		t.Fatalf("a disabled agent has sessions: %+v", l)
	}
	if out, err := cli("agent", "enable", first.AgentID); err != nil {
		t.Fatalf("agent enable: %v %s", err, out)
	}
	if _, ok := poll(90*time.Second, func() bool { return status().State == "up" && len(sessions()) == 1 }); !ok {
		t.Fatalf("the agent did not come back after enable: %+v", status())
	}
	// The operator's actions are in the audit log with the caller's uid.
	out, err := cli("audit", "query", "-action", "session.kill", "-outcome", "success")
	if err != nil || !strings.Contains(out, "session/"+first.ID) || !strings.Contains(out, fmt.Sprintf("local-admin:uid=%d,", os.Getuid())) {
		t.Fatalf("audit query: %v\n%s", err, out)
	}
}
