// Command kms-soft is AVON's software keystore KMS plugin. The core starts
// it; run by hand it explains that and exits.
package main

import (
	"github.com/avonzt/avon/plugins/kms-soft/softkms"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{KMS: softkms.New()}) }
