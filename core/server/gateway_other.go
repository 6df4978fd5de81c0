//go:build !linux

package server

import (
	"context"
	"errors"

	"github.com/avonzt/avon/core/api"
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
