package main_test

import (
	"context"
	"errors"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/pqc"
	"github.com/avonzt/avon/sdk/pqc/pqcrpc"
	"github.com/avonzt/avon/sdk/pqc/pqctest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

// The conformance kit through the built binary, exactly as the core runs it.
func TestPluginProcess(t *testing.T) {
	bin := plugintest.Build(t, "github.com/avonzt/avon/examples/pqc-slhdsa")
	pqctest.Run(t, func(t *testing.T) pqc.Provider {
		s := plugintest.Start(t, bin, plugin.KindPQC, plugintest.Options{Config: []byte(`{"algorithms":["SLH-DSA-SHA2-128f","SLH-DSA-SHAKE-128f"]}`)})
		return pqcrpc.NewClient(s.Conn.Conn)
	})

	s := plugintest.Start(t, bin, plugin.KindPQC, plugintest.Options{Config: []byte(`{}`)})
	c := pqcrpc.NewClient(s.Conn.Conn)
	// A signature-only plugin answers the KEM capability "not implemented".
	if _, err := c.Encapsulate(context.Background(), &pqc.EncapsulateRequest{Algorithm: "SLH-DSA-SHA2-128f"}); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("KEM call on a signature-only plugin: want ErrNotImplemented, got %v", err)
	}
}
