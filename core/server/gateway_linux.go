package server

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/netcfg"
	"github.com/avonzt/avon/internal/pqx509"
)

// gatewayRuntime is the running gateway and what it installed.
type gatewayRuntime struct {
	g         *gateway.Gateway
	nc        *netcfg.Conn
	applied   *netcfg.Applied
	rev       *pulse.Revocations
	stopWatch func()
	stopCAs   func() // the ca.rotated watcher
	stopPol   func() // the policy.changed watcher (enforcing gateways)
	// stopPolDown stops the watcher of the policy plugin's state.
	stopPolDown func()
	deleg       *delegator // the delegated handshake key; nil when gateway.delegated_key is off
	iface       string
	addr        netip.Addr
	addr6       netip.Addr // the gateway's IPv6 tunnel address (tunnel_cidr6), if any
	port        uint16
	stopped     bool // by teardown, which runs once
}

// gatewayPreflight checks what the gateway needs from the host, with the
// fix in the message.
func gatewayPreflight() error {
	if !netcfg.CanAdminister() {
		return errors.New("gateway: needs root or CAP_NET_ADMIN to create its TUN device " +
			"(run the core as root, give it AmbientCapabilities=CAP_NET_ADMIN, or set gateway { enabled = false })")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("gateway: no /dev/net/tun (%v): load the tun module (modprobe tun) "+
			"or, in a container, pass the device (--device /dev/net/tun)", err)
	}
	return nil
}

func aeadID(s string) handshake.AEADID {
	switch s {
	case "aes-256-gcm":
		return handshake.AES256GCM
	case "chacha20-poly1305":
		return handshake.ChaCha20Poly1305
	}
	return 0 // auto: the agent proposes
}

// startGateway brings the gateway up when it is enabled; it runs after the
// gateway certificate exists. On error, what it started is stopped again
// (by teardown, through s.gw, for what got that far).
func (s *Server) startGateway(ctx context.Context) (err error) {
	gc := s.cfg.Gateway
	if !gc.Enabled {
		return nil
	}
	cert, err := s.GatewayCertificate(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return errors.New("gateway: no gateway certificate: it needs a kms and a ca plugin (a CA with init = \"manual\" needs avon ca init first, then a restart)")
	}
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	_, kmsName := s.gatewayPlugins()
	ks, err := newKMSSigner(ctx, s.plugins, kmsName, gatewayKeyID, "gateway-identity")
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	signer, err := newHandshakeSigner(ks)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	leaf, err := pqx509.ParseCertificate(cert.Certificate)
	if err != nil {
		return fmt.Errorf("gateway: certificate: %w", err)
	}
	if !bytes.Equal(leaf.PublicKey.Raw, signer.Public()) {
		return fmt.Errorf("gateway: the certificate (serial %s) does not certify the current version of key %s in kms.%s", cert.Serial, gatewayKeyID, kmsName)
	}
	cas := s.caPlugins()
	lookup := caStatus(cas)
	status := newStatusCache(lookup, time.Now)
	verifier, err := newIssuerVerifier(ctx, cas, status.Revoked)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	pool, err := ipam.New(s.store, gc.TunnelCIDR)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	var pool6 *ipam.Pool
	if gc.TunnelCIDR6.IsValid() {
		if pool6, err = ipam.New(s.store, gc.TunnelCIDR6); err != nil {
			return fmt.Errorf("gateway: tunnel_cidr6: %w", err)
		}
	}
	_, portStr, _ := net.SplitHostPort(gc.Listen)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	if port == 0 {
		port = gateway.DefaultPort
	}
	if err := gatewayPreflight(); err != nil {
		return err
	}
	pol, err := s.gatewayPolicy()
	if err != nil {
		return err
	}
	pol.GatewayID = cert.ID

	rt := &gatewayRuntime{iface: gc.Interface, addr: pool.Gateway(), port: uint16(port)}
	if pool6 != nil {
		rt.addr6 = pool6.Gateway()
	}
	s.gw = rt
	dev, err := tun.CreateTUN(gc.Interface, gc.MTU)
	if err != nil {
		return fmt.Errorf("gateway: create tun %s: %w", gc.Interface, err)
	}
	// Calibrated time; the zero time when the calibration is stale, which
	// fails handshakes and pulses closed (skew, validity).
	now := func() time.Time {
		t, err := s.calib.Now()
		if err != nil {
			return time.Time{}
		}
		return t
	}
	var delegated *handshake.DelegatedKeys
	if dk := gc.DelegatedKey; dk.Enabled {
		delegated = &handshake.DelegatedKeys{}
		if rt.deleg, err = newDelegator(delegated, signer, s.opts.Rand, now, dk.Validity, s.log.Named("gateway.delegation")); err != nil {
			_ = dev.Close()
			return fmt.Errorf("gateway: %w", err)
		}
		rt.deleg.start()
	}
	g, err := gateway.New(gateway.Config{Listen: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)),
		TunnelPrefix: gc.TunnelCIDR, TunnelPrefix6: gc.TunnelCIDR6, IPAM6: pool6, Routes: gc.Routes, MTU: gc.MTU, AEAD: aeadID(gc.AEAD), HandshakeRate: gc.HandshakeRate,
		MaxSessions: gc.MaxSessions, PulseInterval: gc.PulseInterval, MaxSkew: s.cfg.Calibration.MaxSkew,
		Now: now, Rand: s.opts.Rand, Signer: signer, Delegated: delegated, Verifier: verifier, IPAM: pool, Logger: s.log.Named("gateway"),
		Policy: pol, Authorize: s.authorizeAgent},
		dev, conn.NewStdNetBind())
	if err != nil {
		_ = dev.Close()
		return err
	}
	rt.g = g // owns dev from here
	if rt.nc, err = netcfg.Open(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	// The gateway's own tunnel addresses, and the tunnel networks on the
	// device (proto 65, so `ip route show proto 65` shows them).
	plan := netcfg.Plan{Dev: gc.Interface, MTU: gc.MTU, Up: true,
		Addrs:  []netip.Prefix{netip.PrefixFrom(rt.addr, 32)},
		Routes: []netcfg.Route{{Dst: gc.TunnelCIDR}}}
	if rt.addr6.IsValid() {
		plan.Addrs = append(plan.Addrs, netip.PrefixFrom(rt.addr6, 128))
		plan.Routes = append(plan.Routes, netcfg.Route{Dst: gc.TunnelCIDR6})
	}
	rt.applied, err = rt.nc.Apply(plan)
	if err != nil {
		return fmt.Errorf("gateway: configure %s: %w", gc.Interface, err)
	}
	if err := g.Start(context.Background()); err != nil {
		if errors.Is(err, gateway.ErrBind) {
			return fmt.Errorf("%w (is another process using UDP port %d? change gateway { listen })", err, port)
		}
		return err
	}
	rt.rev, err = pulse.NewRevocations(pulse.RevocationsConfig{Bus: s.events, Tracker: g.Tracker(),
		Terminator: revokingTerminator{g: g, cache: status}, Resync: resyncSessions(g, lookup, status, s.operatorEnded),
		Logger: s.log.Named("gateway.revocations")})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := rt.rev.Start(context.Background()); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if rt.stopWatch, err = watchRevocations(context.Background(), s.events, status); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if rt.stopCAs, err = watchIssuers(context.Background(), s.events, verifier, s.log.Named("gateway.issuers"), nil); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if pol.Mode == gateway.PolicyEnforce {
		if rt.stopPol, err = watchPolicy(context.Background(), s.events, g, s.log.Named("gateway.policy")); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		if inst, ok := s.plugins.Get("policy", s.cfg.Gateway.Policy.Plugin); ok {
			rt.stopPolDown = watchPolicyPlugin(inst.Status, g, policyPluginPoll, s.log.Named("gateway.policy"))
		}
	}
	collectors := append(gatewayCollectors(g), flowCollectors(g)...)
	if rt.deleg != nil {
		collectors = append(collectors, rt.deleg.collectors()...)
	}
	for _, c := range collectors {
		if err := s.registry.Register(c); err != nil {
			s.log.Warn("metric not registered", "error", err)
		}
	}
	if len(gc.Routes) > 0 {
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && strings.TrimSpace(string(b)) != "1" {
			s.log.Warn("IP forwarding is off: agents cannot reach the routes (sysctl -w net.ipv4.ip_forward=1)", "routes", gc.Routes)
		}
	}
	if gc.TunnelCIDR6.IsValid() && slices.ContainsFunc(gc.Routes, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); err == nil && strings.TrimSpace(string(b)) != "1" {
			s.log.Warn("IPv6 forwarding is off: agents cannot reach the IPv6 routes (sysctl -w net.ipv6.conf.all.forwarding=1)", "routes", gc.Routes)
		}
	}
	s.log.Info("gateway started", "listen", fmt.Sprintf(":%d", port), "interface", gc.Interface, "address", rt.addr, "address6", rt.addr6, "tunnel_cidr6", gc.TunnelCIDR6,
		"tunnel_cidr", gc.TunnelCIDR, "routes", gc.Routes, "endpoint", gc.Endpoint, "certificate", cert.Serial,
		"policy", cmp.Or(string(pol.Mode), string(gateway.PolicyOff)), "policy_plugin", s.cfg.Gateway.Policy.Plugin)
	return nil
}

// stopGateway stops the revocations, the engine (agents get a Close; the
// TUN and the bind are closed) and removes what netcfg installed.
func (s *Server) stopGateway() error {
	rt := s.gw
	if rt == nil || rt.stopped {
		return nil
	}
	rt.stopped = true
	if rt.rev != nil {
		_ = rt.rev.Stop()
	}
	if rt.stopWatch != nil {
		rt.stopWatch()
	}
	if rt.stopCAs != nil {
		rt.stopCAs()
	}
	if rt.stopPol != nil {
		rt.stopPol()
	}
	if rt.stopPolDown != nil {
		rt.stopPolDown()
	}
	var errs []error
	if rt.g != nil {
		errs = append(errs, rt.g.Close())
	}
	if rt.deleg != nil {
		rt.deleg.close() // after the engine: no handshake signs any more
	}
	if rt.applied != nil {
		errs = append(errs, rt.applied.Undo())
	}
	if rt.nc != nil {
		errs = append(errs, rt.nc.Close())
	}
	return errors.Join(errs...)
}

// gatewayCheck is the /readyz line of the gateway.
func (s *Server) gatewayCheck() []api.Check {
	rt := s.gw
	if rt == nil {
		return nil
	}
	return []api.Check{{Name: "gateway", Fn: func(context.Context) (string, error) {
		detail := fmt.Sprintf("listen=:%d interface=%s address=%s sessions=%d", rt.port, rt.iface, rt.addr, rt.g.Tracker().Len())
		if rt.addr6.IsValid() {
			detail += " address6=" + rt.addr6.String()
		}
		if rt.deleg != nil {
			detail += " delegated_key_expires=" + rt.deleg.current().NotAfter.Format(time.RFC3339)
		}
		if err := rt.g.Err(); err != nil {
			return detail, err
		}
		if rt.rev == nil {
			return detail, errors.New("not started")
		}
		select {
		case <-rt.rev.Done():
			return detail, errors.New("revocation events no longer followed")
		default:
		}
		return detail, nil
	}}}
}

// gatewaySessions lists the gateway's live sessions (none without one).
func (s *Server) gatewaySessions() []gateway.SessionInfo {
	if s.gw == nil || s.gw.g == nil {
		return nil
	}
	return s.gw.g.Sessions()
}

// terminateSession ends session id on this replica's gateway and reports
// whether it was live here.
func (s *Server) terminateSession(id pulse.ID, reason string) bool {
	if s.gw == nil || s.gw.g == nil {
		return false
	}
	live := false
	for _, si := range s.gw.g.Sessions() {
		live = live || si.ID == id
	}
	s.gw.g.Terminate(id, reason)
	return live
}

// terminateAgent ends every session of agent id on this replica's gateway.
func (s *Server) terminateAgent(id, reason string) int {
	if s.gw == nil || s.gw.g == nil {
		return 0
	}
	return s.gw.g.TerminateAgent(id, reason)
}
