// Package tunneltest is a test gateway for the agent's tunnel engine
// (agent/tunnel): the responder side of protocol v1 assembled from the real
// parts (core/handshake's Responder, core/tunnel/cookie's Checker,
// core/tunnel/frag, core/tunnel/transport keypairs, core/pulse's Tracker)
// over any wireguard-go conn.Bind, plus the credentials of one agent and
// one gateway from core/handshake/handshaketest's PKI.
//
// It is for tests only: one process, every session in memory, no policy,
// no rate limits, no persistence. It must not be imported by production
// code.
package tunneltest

import (
	"time"

	"github.com/avonzt/avon/core/handshake/handshaketest"
)

// PKI is a root CA, one agent with its chain and one gateway.
type PKI struct {
	RootDER    []byte
	AgentID    string
	AgentKey   *handshaketest.Key
	AgentChain [][]byte // leaf, intermediate
	GatewayKey *handshaketest.Key
	GatewayDER []byte
	// CA issued both; tests issue further agent certificates with it (a
	// renewal).
	CA *handshaketest.PKI
}

// NewPKI issues, from a handshaketest PKI with fresh random keys and CAs
// valid around now, the agent leaf of id (avon://agent/<id>, clientAuth,
// valid from an hour before now to agentNotAfter) and a gateway
// certificate signed by the root (serverAuth, gateway.test, valid from an
// hour before now for 300 days).
func NewPKI(id string, now, agentNotAfter time.Time) (*PKI, error) {
	ca, err := handshaketest.New(handshaketest.Options{Name: "AVON Test", Now: now})
	if err != nil {
		return nil, err
	}
	p := &PKI{RootDER: ca.RootDER, AgentID: id, CA: ca}
	if p.AgentKey, err = handshaketest.NewKey(nil); err != nil {
		return nil, err
	}
	agent, err := ca.IssueAgent(id, p.AgentKey, now.Add(-time.Hour), agentNotAfter)
	if err != nil {
		return nil, err
	}
	p.AgentChain = agent.Chain
	if p.GatewayKey, err = handshaketest.NewKey(nil); err != nil {
		return nil, err
	}
	gw, err := ca.IssueGateway("gateway.test", p.GatewayKey, now.Add(-time.Hour), now.Add(300*24*time.Hour))
	if err != nil {
		return nil, err
	}
	p.GatewayDER = gw.Chain[0]
	return p, nil
}
