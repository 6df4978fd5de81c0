package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/pluginhost"
)

// The gateway's per-flow policy (gateway { policy { } }): the engine is
// the policy plugin the block names, reached through the plugin host (a
// restarted plugin is the same client); every policy.changed event, and
// every gap in the subscription (a change may have been missed),
// re-evaluates the open flows; the enforcement counters are exported as
// avon_gateway_flow_*.

// gatewayPolicy returns the gateway's PolicyConfig. With mode "off" (or no
// block) it is the zero value: enforcement off.
func (s *Server) gatewayPolicy() (gateway.PolicyConfig, error) {
	gp := s.cfg.Gateway.Policy
	if gp.Mode != string(gateway.PolicyEnforce) {
		return gateway.PolicyConfig{}, nil
	}
	inst, ok := s.plugins.Get("policy", gp.Plugin)
	if !ok {
		return gateway.PolicyConfig{}, fmt.Errorf("gateway: policy plugin %q is not running", gp.Plugin)
	}
	return gateway.PolicyConfig{Mode: gateway.PolicyEnforce, Engine: inst.Policy(), PolicySetID: gp.PolicySet,
		Groups: s.agentGroups}, nil
}

// agentGroups returns the group an agent enrolled into (its record in the
// agent registry), for the parents of its Agent entity in policy queries.
func (s *Server) agentGroups(ctx context.Context, agentID string) ([]string, error) {
	a, err := agents.New(s.store).Get(ctx, agentID)
	if err != nil {
		return nil, err
	}
	if a.Group == "" {
		return nil, nil
	}
	return []string{a.Group}, nil
}

// policyChanger is what watchPolicy drives: the gateway.
type policyChanger interface{ PolicyChanged() int }

// watchPolicy re-evaluates the open flows on every policy.changed event
// and subscription gap, until the returned stop is called.
func watchPolicy(ctx context.Context, bus *events.Bus, g policyChanger, log hclog.Logger) (func(), error) {
	sub, err := bus.Subscribe(ctx, events.PolicyChanged)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sub.Gaps():
				n := g.PolicyChanged()
				log.Info("open flows re-evaluated", "cause", "event gap", "flows", n)
			case e, ok := <-sub.C():
				if !ok {
					return
				}
				n := g.PolicyChanged()
				log.Info("open flows re-evaluated", "cause", "policy.changed", "policy_set", e.Subject, "flows", n)
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// policyPluginPoll is how often watchPolicyPlugin reads the policy
// plugin's state.
const policyPluginPoll = 250 * time.Millisecond

// policyDowner is what watchPolicyPlugin drives: the gateway.
type policyDowner interface{ PolicyUnavailable(cause error) }

// watchPolicyPlugin tells the gateway when the policy plugin stops
// serving (its state leaves "running", or its health check fails), so
// that cached decisions stop answering before a call has to fail
// (docs/policy.md, "When the plugin is down"). It polls status every
// poll until the returned stop is called.
func watchPolicyPlugin(status func() pluginhost.Status, g policyDowner, poll time.Duration, log hclog.Logger) func() {
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(poll)
		defer t.Stop()
		wasUp := true
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			st := status()
			up := st.State == pluginhost.StateRunning && st.Healthy
			if !up && wasUp {
				log.Error("policy plugin unavailable: cached decisions dropped, new sessions and flows fail closed",
					"plugin", st.Kind+"."+st.Name, "state", st.State, "message", st.Message)
				g.PolicyUnavailable(fmt.Errorf("policy plugin %s.%s is %s: %w", st.Kind, st.Name, st.State, pluginhost.ErrUnavailable))
			}
			wasUp = up
		}
	}()
	return func() { close(stop); <-done }
}

// flowCollectors exports the enforcement counters (none when off).
func flowCollectors(g *gateway.Gateway) []prometheus.Collector {
	st := g.FlowStats()
	if st == nil {
		return nil
	}
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_flow_" + name, Help: help},
			func() float64 { return float64(f()) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "avon_gateway_flows", Help: "Tracked flows of every session."},
			func() float64 { return float64(st.Flows.Load()) }),
		counter("created_total", "Flows created.", st.FlowsCreated.Load),
		counter("forwarded_total", "Packets of allowed flows forwarded.", st.Forwarded.Load),
		counter("held_total", "Packets held while their flow was decided.", st.Held.Load),
		counter("dropped_denied_total", "Packets of denied flows dropped.", st.DropDenied.Load),
		counter("dropped_unsolicited_total", "Packets to an agent on no flow it opened, dropped.", st.DropUnsolicited.Load),
		counter("dropped_table_full_total", "New flows dropped because a flow table was full.", st.DropTableFull.Load),
		counter("cache_hits_total", "Decisions answered by the cache.", st.CacheHits.Load),
		counter("cache_misses_total", "Decisions the cache did not have.", st.CacheMisses.Load),
		counter("engine_calls_total", "Evaluate calls to the policy plugin.", st.EngineCalls.Load),
		counter("engine_errors_total", "Failed Evaluate calls.", st.EngineErrors.Load),
		counter("fail_closed_total", "Flows denied because the policy plugin could not decide.", st.FailClosed.Load),
		counter("fail_closed_retries_total", "Flows denied fail-closed that the agent's next packet, a second later, opened again to ask the plugin.", st.FailClosedRetries.Load),
		counter("denied_total", "Flows denied.", st.Denied.Load),
		counter("report_only_total", "Flows allowed in report-only mode that policy would deny.", st.ReportOnly.Load),
		counter("cut_total", "Open flows cut by a re-evaluation.", st.Cut.Load),
		counter("cache_purges_total", "Decision cache emptied because the policy plugin was unavailable.", st.CachePurges.Load),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_connect_allowed_total",
			Help: "Connect decisions that allowed a session (report-only ones included)."},
			func() float64 { return float64(st.ConnectAllowed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_connect_denied_total",
			Help: "Connect decisions that denied a session (fail-closed ones included)."},
			func() float64 { return float64(st.ConnectDenied.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_connect_fail_closed_total",
			Help: "Connect decisions denied because the policy plugin could not decide."},
			func() float64 { return float64(st.ConnectFailClosed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "avon_gateway_connect_report_only_total",
			Help: "Sessions allowed in report-only mode that policy would deny."},
			func() float64 { return float64(st.ConnectReportOnly.Load()) }),
	}
}
