package server

import (
	"context"
	"errors"
	"time"

	sdkacme "github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/errdef"
)

// DefaultACMETickInterval is how often the core asks the acme plugin for
// one step of its clean-up of expired orders and authorizations.
const DefaultACMETickInterval = 5 * time.Minute

// runACMETicks calls the acme plugin's Tick (acme.Maintainer) every
// interval at the calibrated time until ctx ends. Without an acme plugin,
// or with one that does not implement Tick, it returns at once; a tick
// without fresh calibration is skipped; a failed tick is logged and the
// next one tries again. Every replica ticks: the plugin's changes are
// conditional, so concurrent sweeps skip each other's work.
func (s *Server) runACMETicks(ctx context.Context, every time.Duration) {
	inst, err := s.acmeInstance()
	if err != nil || inst == nil {
		return
	}
	m, ok := inst.ACME().(sdkacme.Maintainer)
	if !ok {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := calibratedClock{s}.Now()
		if !now.Calibrated {
			s.log.Debug("acme clean-up skipped: no fresh calibration")
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, acmeTimeout)
		_, err := m.Tick(tctx, &sdkacme.TickRequest{Now: now.Time})
		cancel()
		switch {
		case errors.Is(err, errdef.ErrNotImplemented):
			s.log.Info("the acme plugin has no periodic clean-up", "plugin", inst.ID())
			return
		case err != nil && ctx.Err() == nil:
			s.log.Warn("acme clean-up failed; next tick retries", "plugin", inst.ID(), "error", err)
		}
	}
}
