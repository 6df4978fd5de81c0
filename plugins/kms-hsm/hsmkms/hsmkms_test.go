package hsmkms_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/avonzt/avon/plugins/kms-hsm/hsmkms"
	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

func conf(t *testing.T, h *softhsmtest.HSM, label, pin string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"module": h.Module, "token_label": label, "pin": pin,
		"sessions": 2, "wrap_key_label": "avon-wrap", "login_retries": 0})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A failed Configure leaves the previous configuration in force.
func TestReconfigure(t *testing.T) {
	h := softhsmtest.Require(t)
	p := hsmkms.New()
	ctx := context.Background()
	if _, err := p.GetKey(ctx, &kms.GetKeyRequest{ID: "x"}); !errors.Is(err, errdef.ErrNotConfigured) {
		t.Fatalf("before Configure: %v", err)
	}
	hst := plugintest.NewHost()
	req := func(c []byte) *plugin.ConfigureRequest {
		return &plugin.ConfigureRequest{Config: c, Host: hst, DataDir: t.TempDir(), Instance: "kms.hsm"}
	}
	if err := p.Configure(ctx, req(conf(t, h, h.TestToken, softhsmtest.PIN))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "reconf", Algorithm: kms.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string][]byte{
		"unknown token": conf(t, h, "no-such-token", softhsmtest.PIN),
		"other PIN":     conf(t, h, h.TestToken, "0000"),
		"not JSON":      []byte("{"),
	} {
		err := p.Configure(ctx, req(c))
		var pe *plugin.ProblemsError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: Configure: %v, want problems", name, err)
		}
		if _, err := p.Sign(ctx, &kms.SignRequest{ID: "reconf", Message: []byte("m")}); err != nil {
			t.Fatalf("%s: the previous configuration is gone: %v", name, err)
		}
	}
	if err := p.Configure(ctx, req(conf(t, h, h.TestToken, softhsmtest.PIN))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Sign(ctx, &kms.SignRequest{ID: "reconf", Message: []byte("m")}); err != nil {
		t.Fatalf("after reconfiguring: %v", err)
	}
	if algs := p.Info().Metadata["algorithms"]; !strings.Contains(algs, "Ed25519") || !strings.Contains(algs, "ML-DSA-65") {
		t.Errorf("algorithms %q", algs)
	}
}

func TestValidateConfig(t *testing.T) {
	p := hsmkms.New()
	ps := p.ValidateConfig(context.Background(), []byte(`{"module":"","token_label":"","pin":"","sessions":0,"wrap_key_label":"","login_retries":9}`))
	got := map[string]bool{}
	for _, pr := range ps {
		got[pr.Attribute] = true
	}
	for _, a := range []string{"module", "token_label", "pin", "sessions", "wrap_key_label", "login_retries"} {
		if !got[a] {
			t.Errorf("no problem on %s: %+v", a, ps)
		}
	}
	if err := hsmkms.Schema.Validate(); err != nil {
		t.Fatal(err)
	}
}
