// Command acme is AVON's ACME server plugin (RFC 8555): the core serves
// /acme/ on its HTTPS listener and forwards each request to it; it issues
// through the CA plugin it is wired to. The core starts it; run by hand it
// explains that and exits.
package main

import (
	"github.com/avonzt/avon/plugins/acme/acmeplugin"
	"github.com/avonzt/avon/sdk/plugin"
)

// The plugin spends its time waiting on the core (every request is a
// forwarded call and one or two host round trips): one processor serves
// it better than several on a small machine. GOMAXPROCS in the plugin's
// env overrides it.
func main() { plugin.Serve(&plugin.ServeConfig{ACME: acmeplugin.New(), MaxProcs: 1}) }
