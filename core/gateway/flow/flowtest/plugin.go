package flowtest

import (
	"context"

	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/plugin"
)

// Plugin serves an Engine as a policy plugin (sdk/plugin.PolicyPlugin), so
// tests and benchmarks can put a real process and gRPC between the
// gateway and the engine (see flowtest/allowplugin).
type Plugin struct{ *Engine }

// NewPlugin returns a policy plugin deciding with decide.
func NewPlugin(decide DecideFunc) *Plugin { return &Plugin{Engine: New(decide)} }

// Info implements plugin.Plugin.
func (*Plugin) Info() plugin.Info { return plugin.Info{Name: "flowtest", Version: "0.0.0"} }

// ConfigSchema implements plugin.Plugin: no settings.
func (*Plugin) ConfigSchema() config.Schema { return config.Schema{} }

// Configure implements plugin.Plugin.
func (*Plugin) Configure(context.Context, *plugin.ConfigureRequest) error { return nil }

var _ plugin.PolicyPlugin = (*Plugin)(nil)
