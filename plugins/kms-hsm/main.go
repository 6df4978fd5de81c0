// Command kms-hsm is AVON's PKCS#11 KMS plugin. The core starts it; run by
// hand it explains that and exits.
package main

import (
	"github.com/avonzt/avon/plugins/kms-hsm/hsmkms"
	"github.com/avonzt/avon/sdk/plugin"
)

func main() { plugin.Serve(&plugin.ServeConfig{KMS: hsmkms.New()}) }
