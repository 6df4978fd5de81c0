package server

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
)

// OpenStore opens the durable store the configuration names. The CLI uses
// it too (`avon audit verify`, `avon migrate`), so that it reads exactly the
// store the server writes.
func OpenStore(ctx context.Context, cfg *config.Config, log hclog.Logger) (store.KV, error) {
	switch cfg.Storage.Type {
	case "", "embedded":
		path := cfg.Storage.Path
		if path == "" {
			path = "avon.db"
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(cfg.DataDir, path)
		}
		kv, err := embedded.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return kv, nil
	}
	return nil, fmt.Errorf("storage %q is not available in this build", cfg.Storage.Type)
}

// Migrate applies (or with status, lists) the schema migrations of the
// store the configuration at path names, and returns lines to print.
func Migrate(ctx context.Context, path string, status bool, diagnostics io.Writer) ([]string, error) {
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if cfg != nil {
			files = cfg.Files
		}
		_ = config.WriteDiagnostics(diagnostics, files, diags)
		return nil, fmt.Errorf("%s: %w", path, ErrInvalidConfig)
	}
	switch cfg.Storage.Type {
	case "embedded":
		// The embedded store's schema is applied whenever it is opened.
		kv, err := OpenStore(ctx, cfg, hclog.NewNullLogger())
		if err != nil {
			return nil, err
		}
		_ = kv.Close()
		return []string{fmt.Sprintf("embedded store %s: schema is current (applied on open)", cfg.Storage.Path)}, nil
	}
	return nil, fmt.Errorf("storage %q is not available in this build", cfg.Storage.Type)
}
