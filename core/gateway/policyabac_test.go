package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
)

// TestMain removes the plugin binaries plugintest.Build made.
func TestMain(m *testing.M) { plugintest.Main(m) }

// abacConnect: every agent may connect to the gateway, except those of
// group kiosk.
const abacConnect = `@id("agents-connect")
permit (principal is Agent, action == Action::"connect", resource is Gateway)
when { context.source.port > 0 && context.calibration_skew_ms < 60000 && context.location.country == "" &&
       context.time > datetime("2026-01-01T00:00:00Z") && resource.name != "" && principal.name != "" };

@id("no-kiosks")
@reason("kiosks may not connect")
forbid (principal in Group::"kiosk", action == Action::"connect", resource);
`

// abacPolicies: group eng reaches 10.99.0.0/16 on port 443; port 22 is
// forbidden to everyone.
const abacPolicies = abacConnect + `@id("eng-https")
@reason("engineering reaches 10.99.0.0/16 over HTTPS")
permit (principal in Group::"eng", action == Action::"reach", resource)
when { context.destination.ip.isInRange(ip("10.99.0.0/16")) && context.destination.port == 443 &&
       context.destination.protocol == "tcp" };

@id("no-ssh")
@reason("SSH is closed to everyone")
forbid (principal, action == Action::"reach", resource)
when { context.destination.port == 22 };
`

// abacNoPermit is abacPolicies without its reach permit.
const abacNoPermit = abacConnect + `@id("no-ssh")
@reason("SSH is closed to everyone")
forbid (principal, action == Action::"reach", resource)
when { context.destination.port == 22 };
`

// lockedBuffer is an hclog output the test reads while the gateway writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPolicyABACPlugin runs the gateway's flow enforcement against the
// real policy-abac plugin process: no set yet denies (fail closed); the
// agent in group eng reaches :443 and not :22 (told why, by which
// policy); removing the permit cuts the open flow; a report-only set lets
// :22 through and says so in the log and the decision log; the plugin
// stopped denies every new flow.
func TestPolicyABACPlugin(t *testing.T) {
	h := plugintest.NewHost()
	cfg, err := json.Marshal(map[string]any{"policy_dir": "", "default_set": "default", "report_only": false,
		"decision_log_sample_rate": 0.0, "refresh_interval": "0s"})
	if err != nil {
		t.Fatal(err)
	}
	started := plugintest.Start(t, plugintest.Build(t, "github.com/avonzt/avon/plugins/policy-abac"), plugin.KindPolicy,
		plugintest.Options{Config: cfg, Host: h})
	eng := policyrpc.NewClient(started.Conn.Conn)

	logs := &lockedBuffer{}
	server := netip.MustParseAddr("10.99.0.10")
	const agentID = "agent-eng"
	var groupCalls sync.Map
	e := newEnv(t, func(c *Config) {
		c.Routes = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
		c.Policy = PolicyConfig{Mode: PolicyEnforce, Engine: eng, PolicySetID: "default", BatchDelay: time.Millisecond,
			Groups: func(_ context.Context, id string) ([]string, error) {
				groupCalls.Store(id, true)
				if id == agentID {
					return []string{"eng"}, nil
				}
				if strings.HasPrefix(id, "kiosk") {
					return []string{"kiosk"}, nil
				}
				return nil, nil
			}}
	})
	ctx := testCtx(t)
	a := e.agent(agentID, nil)

	// No policy set yet: the plugin answers ErrUnknownPolicySet and the
	// gateway refuses the session (fail closed).
	if _, err := eng.Evaluate(ctx, &policy.EvaluateRequest{PolicySetID: "default"}); !errors.Is(err, policy.ErrUnknownPolicySet) {
		t.Fatalf("evaluate before any set: %v, want ErrUnknownPolicySet", err)
	}
	var ec *errClose
	if err := a.connect(ctx); !errors.As(err, &ec) || ec.c.Code != control.CloseConnectDenied || !strings.Contains(ec.c.Reason, "fail closed") {
		t.Fatalf("connect before any set: %v, want a connect denial that fails closed", err)
	}
	if _, ok := groupCalls.Load(agentID); !ok {
		t.Fatal("the agent's groups were not asked for")
	}

	setPolicies := func(text string, reportOnly bool) {
		t.Helper()
		r, err := eng.SetPolicies(ctx, &policy.SetPoliciesRequest{PolicySetID: "default", Policies: text, ReportOnly: reportOnly})
		if err != nil || !r.Applied {
			t.Fatalf("set policies: %+v %v", r, err)
		}
	}
	setPolicies(abacPolicies, false)
	e.gw.PolicyChanged()
	a.mustConnect(ctx)
	fs := e.gw.FlowStats()

	// A kiosk is refused, told why and by which policy.
	if err := e.agent("kiosk-1", nil).connect(ctx); !errors.As(err, &ec) || ec.c.Code != control.CloseConnectDenied ||
		ec.c.Reason != "kiosks may not connect (policy no-kiosks)" {
		t.Fatalf("kiosk connect: %v, want the no-kiosks denial", err)
	}
	if n := e.gw.Stats().ConnectRefused.Load(); n != 2 {
		t.Fatalf("%d connects refused, want 2", n)
	}
	// The plugin's decision log records the refusal.
	waitFor(t, "the kiosk's connect denial in the decision log", func() bool {
		for _, ev := range h.Events() {
			if ev.Action == "policy.decision" && ev.Fields["action"] == `Action::"connect"` && ev.Fields["allow"] == "false" &&
				ev.Fields["policies"] == "no-kiosks" && strings.Contains(ev.Fields["resource"], "Gateway::") {
				return true
			}
		}
		return false
	})

	// :443 passes: the SYN reaches the TUN after the decision.
	syn := ipv4TCP(a.addr(), server, 40000, 443, 0x02)
	a.send(syn)
	if got := e.tunIn(ctx); !bytes.Equal(got, syn) {
		t.Fatalf("tun got %x, want the SYN to :443 (flow stats: denied %d, fail closed %d)", got,
			fs.Denied.Load(), fs.FailClosed.Load())
	}
	synack := ipv4TCP(server, a.addr(), 443, 40000, 0x12)
	e.tun.Outbound <- synack
	if got := a.recvPlain(ctx, false); !bytes.Equal(got[:len(synack)], synack) {
		t.Fatalf("agent got %x, want the SYN-ACK", got)
	}

	// :22 is dropped; the agent learns the reason and the policy.
	a.send(ipv4TCP(a.addr(), server, 40001, 22, 0x02))
	d := a.recvDenial(ctx, 4)
	if d.Dst != netip.AddrPortFrom(server, 22) || d.Reason != "SSH is closed to everyone" ||
		len(d.PolicyIDs) != 1 || d.PolicyIDs[0] != "no-ssh" {
		t.Fatalf("denial %+v", d)
	}
	e.noTunPacket()

	// The permit goes: the open :443 flow is cut and the agent told.
	setPolicies(abacNoPermit, false)
	start := time.Now()
	e.gw.PolicyChanged()
	d = a.recvDenial(ctx, 4)
	if d.Dst != netip.AddrPortFrom(server, 443) || d.Src.Port() != 40000 ||
		!strings.HasPrefix(d.Reason, "open flow cut: no policy permits") || len(d.PolicyIDs) != 0 {
		t.Fatalf("cut denial %+v", d)
	}
	t.Logf("open :443 flow cut and the agent told %v after the policy change", time.Since(start))
	dropped := fs.DropDenied.Load()
	a.send(ipv4TCP(a.addr(), server, 40000, 443, 0x10))
	waitFor(t, "the cut flow's packet dropped", func() bool { return fs.DropDenied.Load() == dropped+1 })
	e.noTunPacket()

	// Report-only: :22 passes, and the would-be denial is logged by the
	// gateway and written to the decision log.
	setPolicies(abacPolicies, true)
	e.gw.PolicyChanged()
	ssh := ipv4TCP(a.addr(), server, 40002, 22, 0x02)
	a.send(ssh)
	if got := e.tunIn(ctx); !bytes.Equal(got, ssh) {
		t.Fatalf("tun got %x, want the SYN to :22 in report-only mode", got)
	}
	waitFor(t, "the report-only flow logged", func() bool {
		return strings.Contains(logs.String(), "flow allowed in report-only mode") && strings.Contains(logs.String(), "no-ssh")
	})
	if fs.ReportOnly.Load() == 0 {
		t.Fatal("report-only flow not counted")
	}
	waitFor(t, "the would-be denial in the decision log", func() bool {
		for _, ev := range h.Events() {
			if ev.Action == "policy.decision" && wouldDeny(ev) {
				return true
			}
		}
		return false
	})

	// The plugin process is killed while decisions are on their way: a
	// burst of new flows to fresh destinations, the kill right after the
	// first Evaluate went out. Every one of them that the engine did not
	// answer is denied (fail closed).
	cachedBefore := fs.CacheHits.Load()
	calls := fs.EngineCalls.Load()
	allowed0, denied0, failed0 := fs.Allowed.Load(), fs.Denied.Load(), fs.FailClosed.Load()
	// The allowed flows' held SYNs go to the TUN: drain it meanwhile, as
	// the kernel would, so that delivering decisions never waits on it.
	stopDrain, drained := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-e.tun.Inbound:
				n++
			case <-stopDrain:
				drained <- n
				return
			}
		}
	}()
	for i := range 64 {
		a.send(ipv4TCP(a.addr(), netip.AddrFrom4([4]byte{10, 99, 1, byte(i)}), 41000, 443, 0x02))
	}
	waitFor(t, "a decision call under way", func() bool { return fs.EngineCalls.Load() > calls })
	started.Client.Kill()
	// Every flow of the burst gets its verdict counted: allowed by an
	// answer that came before the kill, or denied (fail closed) after it;
	// none stays pending.
	ok := waitUntil(30*time.Second, func() bool { return fs.Allowed.Load()-allowed0+fs.Denied.Load()-denied0 >= 64 })
	close(stopDrain)
	released := <-drained
	if !ok {
		t.Fatalf("the burst: %d allowed, %d denied of 64 (flows created %d, fail closed %d, engine calls %d)",
			fs.Allowed.Load()-allowed0, fs.Denied.Load()-denied0, fs.FlowsCreated.Load(), fs.FailClosed.Load()-failed0, fs.EngineCalls.Load())
	}
	if fs.CachePurges.Load() == 0 {
		t.Fatal("the decision cache was not emptied after the kill")
	}
	// The engine may have answered the whole burst before it died; what
	// it did not answer was denied. Either way, the flow asked for next
	// (below) must fail closed.
	t.Logf("the burst: %d allowed before the kill (%d SYNs released), %d denied, %d of them failing closed",
		fs.Allowed.Load()-allowed0, released, fs.Denied.Load()-denied0, fs.FailClosed.Load()-failed0)
	if fs.FailClosed.Load() == failed0 {
		// The engine answered the whole burst before it died, so the
		// gateway has not seen it fail yet (the core's plugin watcher
		// would tell it within 250 ms; there is none here): the next
		// call, for a fresh destination, fails and fails closed.
		purges := fs.CachePurges.Load()
		a.send(ipv4TCP(a.addr(), netip.AddrFrom4([4]byte{10, 99, 2, 1}), 41001, 443, 0x02))
		waitFor(t, "a flow after the kill failing closed", func() bool { return fs.FailClosed.Load() > failed0 })
		if fs.CachePurges.Load() == purges {
			t.Fatal("the decision cache was not emptied when the engine call failed")
		}
	}
	for len(e.tun.Inbound) > 0 {
		<-e.tun.Inbound // what the plugin allowed before it died
	}
	// A destination decided (and cached) before the kill is asked again
	// and denied: no cached allow outlives the plugin.
	if e.gw.flows.Cache().Len() != 0 {
		t.Fatalf("%d cached decisions after the plugin died", e.gw.flows.Cache().Len())
	}
	failed := fs.FailClosed.Load()
	// (The agent's Denials are rate limited per second: the burst used
	// them up; the verdict is read from the flow table.)
	a.send(ipv4TCP(a.addr(), server, 40003, 22, 0x02))
	waitFor(t, "the :22 flow denied", func() bool {
		for _, fi := range e.gw.SessionFlows(pulseID(a)) {
			if fi.Key.SrcPort == 40003 && fi.Verdict == flow.Deny {
				return true
			}
		}
		return false
	})
	if fs.FailClosed.Load() != failed+1 || fs.CacheHits.Load() != cachedBefore {
		t.Fatalf("fail closed %d, want %d; cache hits %d, want %d", fs.FailClosed.Load(), failed+1, fs.CacheHits.Load(), cachedBefore)
	}
	e.noTunPacket()

	// Established flows: the next pulse re-checks them and, the plugin
	// being dead, cuts them (fail closed); the session itself stays (its
	// connect re-check could not be answered) and no packet of a cut
	// flow passes.
	cutBefore := fs.Cut.Load()
	a.seq++
	a.sendControl(&control.Pulse{Seq: a.seq, SessionToken: a.stoken, AgentTime: a.now().UnixNano(), OS: "linux", AgentVersion: "test"})
	waitFor(t, "the open flows cut after the pulse", func() bool { return fs.Cut.Load() > cutBefore })
	waitFor(t, "the connect re-check failed closed", func() bool { return fs.ConnectFailClosed.Load() >= 2 })
	if len(e.gw.Sessions()) != 1 {
		t.Fatal("the session was ended by a re-check the plugin could not answer")
	}
	dropped = fs.DropDenied.Load()
	a.send(ipv4TCP(a.addr(), server, 40002, 22, 0x10))
	waitFor(t, "the cut flow's packet dropped", func() bool { return fs.DropDenied.Load() == dropped+1 })
	e.noTunPacket()
}

// wouldDeny reports whether a decision log event is a report-only
// would-be denial of port 22 by no-ssh.
func wouldDeny(ev host.Event) bool {
	return ev.Fields["would_deny"] == "true" && ev.Fields["policies"] == "no-ssh" &&
		strings.Contains(ev.Fields["context"], `"port":22`)
}
