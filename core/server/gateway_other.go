//go:build !linux

package server

import (
	"context"
	"errors"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/pulse"
)

// gatewayRuntime is the running gateway; the gateway runs on Linux only.
type gatewayRuntime struct{}

func (s *Server) startGateway(context.Context) error {
	if !s.cfg.Gateway.Enabled {
		return nil
	}
	return errors.New("gateway: runs on Linux only (TUN and rtnetlink); set gateway { enabled = false }")
}

func (s *Server) stopGateway() error        { return nil }
func (s *Server) gatewayCheck() []api.Check { return nil }

func (s *Server) gatewaySessions() []gateway.SessionInfo { return nil }
func (s *Server) terminateSession(pulse.ID, string) bool { return false }
func (s *Server) terminateAgent(string, string) int      { return 0 }
