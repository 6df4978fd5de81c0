package server

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/sdk/host"
)

func auditEvent(action, outcome string) host.Event {
	return host.Event{Action: action, Outcome: outcome, Actor: "core"}
}

// ReloadReport says what a reload changed and what needs a restart.
type ReloadReport struct {
	Applied     []string // what took effect
	NeedRestart []string // what changed but only takes effect on restart
}

// Reload re-reads the configuration file and applies what can change while
// running: the log level and each plugin's `config { }` body (validated by
// the plugin first; a refused body leaves the old one in force). Everything
// else that changed is listed as needing a restart. A file with mistakes
// changes nothing.
func (s *Server) Reload(ctx context.Context) (*ReloadReport, error) {
	cfg, diags := config.Load(s.opts.ConfigPath)
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if cfg != nil {
			files = cfg.Files
		}
		_ = config.WriteDiagnostics(s.opts.Diagnostics, files, diags)
		return nil, fmt.Errorf("reload %s: %w", s.opts.ConfigPath, ErrInvalidConfig)
	}
	old := s.cfg
	rep := &ReloadReport{}
	need := func(what string) { rep.NeedRestart = append(rep.NeedRestart, what) }
	if cfg.DataDir != old.DataDir {
		need("data_dir")
	}
	if cfg.API != old.API {
		need("api")
	}
	if fmt.Sprint(cfg.Gateway) != fmt.Sprint(old.Gateway) {
		need("gateway")
	}
	if cfg.Plugins != old.Plugins {
		need("plugins")
	}
	if cfg.Storage.Type != old.Storage.Type || cfg.Storage.Path != old.Storage.Path {
		need("storage")
	}
	if cfg.LogFormat != old.LogFormat {
		need("log_format")
	}
	if cfg.Auth != old.Auth {
		need("auth")
	}

	oldByID := map[string]*config.Plugin{}
	for _, p := range old.Plugin {
		oldByID[p.Kind+"."+p.Name] = p
	}
	type change struct {
		p  *config.Plugin
		js []byte
	}
	var changes []change
	var all hcl.Diagnostics
	seen := map[string]bool{}
	for _, p := range cfg.Plugin {
		id := p.Kind + "." + p.Name
		seen[id] = true
		op, ok := oldByID[id]
		if !ok {
			need("plugin " + id + " (added)")
			continue
		}
		if p.Disabled != op.Disabled || p.Command != op.Command || p.SHA256 != op.SHA256 ||
			!slices.Equal(p.Args, op.Args) || !maps.Equal(p.Env, op.Env) || !maps.EqualFunc(p.Uses, op.Uses, slices.Equal[[]string]) {
			need("plugin " + id + " (command, args, env, sha256, uses or enabled)")
			continue
		}
		if p.Disabled {
			continue
		}
		inst, ok := s.plugins.Get(pluginKind(p.Kind), p.Name)
		if !ok {
			continue
		}
		js, d := p.DecodeConfig(cfg.EvalContext(), inst.Schema())
		all = append(all, d...)
		if d.HasErrors() {
			continue
		}
		oldJS, _ := op.DecodeConfig(old.EvalContext(), inst.Schema())
		if bytes.Equal(js, oldJS) {
			continue
		}
		problems, err := inst.Validate(ctx, js)
		if err != nil {
			all = append(all, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin could not validate its configuration", Detail: err.Error(), Subject: p.DeclRange.Ptr()})
			continue
		}
		for _, pr := range problems {
			all = append(all, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: fmt.Sprintf("plugin %s: %s", id, pr.Summary), Detail: pr.Detail, Subject: p.DeclRange.Ptr()})
		}
		changes = append(changes, change{p: p, js: js})
	}
	for id := range oldByID {
		if !seen[id] {
			need("plugin " + id + " (removed)")
		}
	}
	if all.HasErrors() {
		_ = config.WriteDiagnostics(s.opts.Diagnostics, cfg.Files, all)
		return nil, fmt.Errorf("reload %s: %w", s.opts.ConfigPath, ErrInvalidConfig)
	}
	for _, c := range changes {
		inst, _ := s.plugins.Get(pluginKind(c.p.Kind), c.p.Name)
		if err := inst.Reconfigure(ctx, c.js); err != nil {
			return rep, fmt.Errorf("reload plugin %s: %w", inst.ID(), err)
		}
		rep.Applied = append(rep.Applied, "plugin "+inst.ID()+" config")
	}
	if cfg.LogLevel != old.LogLevel {
		s.log.SetLevel(hclog.LevelFromString(cfg.LogLevel))
		rep.Applied = append(rep.Applied, "log_level")
	}
	// Keep the old file's view for what was not applied: only the applied
	// parts of cfg take effect, so the next reload compares against them.
	next := *old
	next.LogLevel = cfg.LogLevel
	next.Files = cfg.Files
	next.Plugin = slices.Clone(old.Plugin)
	for k, p := range next.Plugin {
		for _, c := range changes {
			if c.p.Kind == p.Kind && c.p.Name == p.Name {
				np := *p
				np.Config = c.p.Config
				next.Plugin[k] = &np
			}
		}
	}
	s.cfg = &next
	_ = s.audit.Emit(ctx, "core", auditEvent("core.reload", "success"))
	return rep, nil
}
