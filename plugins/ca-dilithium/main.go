// Command ca-dilithium is AVON's certificate authority plugin: X.509 with
// ML-DSA (RFC 9881), keys in the wired KMS plugin, CRL and OCSP. The core
// starts it; run by hand it explains that and exits.
package main

import (
	"github.com/avonzt/avon/plugins/ca-dilithium/caplugin"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{CA: caplugin.New()}) }
