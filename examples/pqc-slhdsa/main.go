// Command pqc-slhdsa is a third-party AVON plugin: it adds SLH-DSA (FIPS 205)
// signatures as a pqc provider. It imports only github.com/avonzt/avon/sdk,
// so it is the template to copy for a plugin of your own (see README.md).
package main

import (
	"github.com/avonzt/avon/examples/pqc-slhdsa/slhdsa"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{PQC: slhdsa.New()}) }
