// Command testkms is a kms plugin that misbehaves on request, for the plugin
// host's tests. GetKey's ID selects the behaviour:
//
//	"crash"   the process exits at once (status 9)
//	"hang"    the call blocks until its context ends
//	"missing" kms.ErrKeyNotFound
//	"storage" round-trips the ID through host storage and returns the version
//	"audit"   emits an audit event
//	other     a key with that ID
//
// Health fails while the file "unhealthy" exists in the data dir and blocks
// while "hang-health" exists. GenerateRandom serves bytes from the OS (a
// stand-in for a hardware generator) and counts its calls in the file
// "random-calls" of the data dir.
package main

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugin"
)

type testKMS struct {
	kms.Unimplemented
	mu      sync.Mutex
	host    host.Host
	dataDir string
	label   string
}

func (p *testKMS) GenerateRandom(_ context.Context, r *kms.GenerateRandomRequest) (*kms.GenerateRandomResponse, error) {
	if r.Length <= 0 || r.Length > kms.MaxRandomLength {
		return nil, fmt.Errorf("length %d: %w", r.Length, errdef.ErrInvalidArgument)
	}
	b := make([]byte, r.Length)
	if _, err := crand.Read(b); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	path := filepath.Join(p.dataDir, "random-calls")
	n, _ := os.ReadFile(path)
	c, _ := strconv.Atoi(string(n))
	_ = os.WriteFile(path, []byte(strconv.Itoa(c+1)), 0o600)
	return &kms.GenerateRandomResponse{Random: b}, nil
}

func (p *testKMS) Info() plugin.Info { return plugin.Info{Name: "testkms", Version: "1.2.3"} }

func (p *testKMS) ConfigSchema() config.Schema {
	return config.Schema{Attributes: []config.Attribute{
		{Name: "label", Type: cty.String, Required: true, Description: "echoed in key labels"},
		{Name: "size", Type: cty.Number, Default: cty.NumberIntVal(1), Description: "must be positive"},
	}}
}

type cfg struct {
	Label string `json:"label"`
	Size  int    `json:"size"`
}

func (p *testKMS) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c cfg
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	if c.Size <= 0 {
		return []plugin.Problem{{Attribute: "size", Summary: "size must be positive"}}
	}
	return nil
}

func (p *testKMS) Configure(ctx context.Context, req *plugin.ConfigureRequest) error {
	if ps := p.ValidateConfig(ctx, req.Config); len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	var c cfg
	_ = config.Unmarshal(req.Config, &c)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.host, p.dataDir, p.label = req.Host, req.DataDir, c.Label
	plugin.NewLogger().Info("testkms configured", "label", c.Label)
	return nil
}

func (p *testKMS) Health(ctx context.Context) error {
	p.mu.Lock()
	dir := p.dataDir
	p.mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "hang-health")); err == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	if _, err := os.Stat(filepath.Join(dir, "unhealthy")); err == nil {
		return fmt.Errorf("marked unhealthy")
	}
	return nil
}

func (p *testKMS) GetKey(ctx context.Context, r *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	p.mu.Lock()
	h, label := p.host, p.label
	p.mu.Unlock()
	switch r.ID {
	case "crash":
		os.Exit(9)
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	case "missing":
		return nil, fmt.Errorf("get key %q: %w", r.ID, kms.ErrKeyNotFound)
	case "storage":
		v, err := h.Storage().Put(ctx, "k", []byte(r.ID), host.PutOptions{})
		if err != nil {
			return nil, err
		}
		e, err := h.Storage().Get(ctx, "k")
		if err != nil {
			return nil, err
		}
		return &kms.GetKeyResponse{Key: &kms.Key{ID: string(e.Value), Labels: map[string]string{"version": strconv.FormatInt(v, 10)}}}, nil
	case "audit":
		if err := h.Audit(ctx, host.Event{Action: "testkms.audit", Target: "key/audit", Outcome: "success"}); err != nil {
			return nil, err
		}
	}
	return &kms.GetKeyResponse{Key: &kms.Key{ID: r.ID, Algorithm: kms.Ed25519, Labels: map[string]string{"label": label}}}, nil
}

func main() { plugin.Serve(&plugin.ServeConfig{KMS: &testKMS{}}) }
