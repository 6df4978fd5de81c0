// Command acme is AVON's ACME server plugin (RFC 8555): the core serves
// /acme/ on its HTTPS listener and forwards each request to it; it issues
// through the CA plugin it is wired to. The core starts it; run by hand it
// explains that and exits.
package main

import (
	"github.com/avonzt/avon/plugins/acme/acmeplugin"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{ACME: acmeplugin.New()}) }
