// Command allowplugin is a policy plugin that allows every query
// (flowtest.AllowAll), for tests and benchmarks of the gateway's flow
// enforcement across a real plugin process.
package main

import (
	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{Policy: flowtest.NewPlugin(flowtest.AllowAll)}) }
