package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/postgres"
	"github.com/avonzt/avon/core/store/redisstore"
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
	case "postgres":
		kv, err := postgres.Open(ctx, cfg.Storage.DSN, postgres.WithMaxConns(cfg.Storage.MaxConns),
			postgres.WithConnectTimeout(cfg.Storage.ConnectTimeout), postgres.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return kv, nil
	case "redis":
		r := cfg.Storage.Redis
		opts := redisstore.Options{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB, KeyPrefix: r.KeyPrefix,
			DialTimeout: r.Timeout, ReadTimeout: r.Timeout, WriteTimeout: r.Timeout, Logger: log, RequireDurable: cfg.Storage.RequireDurable}
		if r.TLS {
			opts.TLS = redisTLS(r.Addr)
		}
		kv, err := redisstore.Open(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return kv, nil
	}
	return nil, fmt.Errorf("storage %q is not available in this build", cfg.Storage.Type)
}

// OpenStoreToInspect opens the configured store for the CLI's audit
// commands, which must not change what they inspect: an embedded database
// must already exist (a mistyped data_dir is an error, not a new empty log),
// and PostgreSQL is opened without applying migrations (a newer binary run
// by an auditor never migrates production; a pending migration is an
// error that names it).
func OpenStoreToInspect(ctx context.Context, cfg *config.Config, log hclog.Logger) (store.KV, error) {
	switch cfg.Storage.Type {
	case "", "embedded":
		path := cfg.Storage.Path
		if !filepath.IsAbs(path) {
			path = filepath.Join(cfg.DataDir, path)
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no embedded store at %s (is data_dir right?): %w", path, err)
		}
	case "postgres":
		kv, err := postgres.Open(ctx, cfg.Storage.DSN, postgres.WithMaxConns(2),
			postgres.WithConnectTimeout(cfg.Storage.ConnectTimeout), postgres.WithLogger(log), postgres.WithoutMigrate())
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return kv, nil
	}
	return OpenStore(ctx, cfg, log)
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
	case "redis":
		return []string{"redis store: no schema to migrate"}, nil
	case "embedded":
		// The embedded store's schema is applied whenever it is opened.
		kv, err := OpenStore(ctx, cfg, hclog.NewNullLogger())
		if err != nil {
			return nil, err
		}
		_ = kv.Close()
		return []string{fmt.Sprintf("embedded store %s: schema is current (applied on open)", cfg.Storage.Path)}, nil
	case "postgres":
		if status {
			infos, err := postgres.MigrationStatus(ctx, cfg.Storage.DSN)
			if err != nil {
				return nil, err
			}
			var lines []string
			for _, m := range infos {
				state := "pending"
				switch {
				case m.Drift:
					state = "CHANGED since it was applied (refused)"
				case !m.Known:
					state = "applied by a newer avon (unknown to this binary)"
				case m.Applied:
					state = "applied " + m.AppliedAt.UTC().Format(time.RFC3339)
				}
				lines = append(lines, fmt.Sprintf("%-32s %s", m.Name, state))
			}
			return lines, nil
		}
		applied, err := postgres.Migrate(ctx, cfg.Storage.DSN, hclog.NewNullLogger())
		if err != nil {
			return nil, err
		}
		if len(applied) == 0 {
			return []string{"postgres: schema is current; nothing to apply"}, nil
		}
		lines := []string{fmt.Sprintf("postgres: applied %d migration(s):", len(applied))}
		for _, a := range applied {
			lines = append(lines, "  "+a)
		}
		return lines, nil
	}
	return nil, fmt.Errorf("storage %q is not available in this build", cfg.Storage.Type)
}
