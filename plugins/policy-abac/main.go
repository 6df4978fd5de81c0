// Command policy-abac is AVON's access policy plugin: Cedar policies
// validated against AVON's schema, batched and explained decisions,
// report-only sets and a sampled, masked decision log. The core starts it;
// run by hand it explains that and exits.
package main

import (
	"github.com/avonzt/avon/plugins/policy-abac/abacplugin"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{Policy: abacplugin.New()}) }
