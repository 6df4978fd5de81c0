package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os/user"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/core/rng"
	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/sdk/host"
)

const tokenUsage = `Usage: avon token <command> [flags]

Enrollment tokens: one use each, shown once, only their hash is stored.
The command works on the configured store directly (run it where the core
runs, with its configuration); every change is audited.

Commands:
  create   avon token create -group eng [-ttl 1h] [-json] -config config.hcl
  list     avon token list [-json] -config config.hcl
  revoke   avon token revoke -id <64 hex> -config config.hcl
`

func cmdToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	group := fs.String("group", "", "group the enrolled agent joins (create)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token can be used (create)")
	id := fs.String("id", "", "token id (revoke)")
	asJSON := fs.Bool("json", false, "JSON output")
	switch args[0] {
	case "create", "list", "revoke":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, tokenUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "avon token: unknown command %q\n\n%s", args[0], tokenUsage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, cfg, ok := openConfiguredStore(ctx, *path, stderr)
	if !ok {
		return 1
	}
	defer kv.Close()
	// This process's own DRBG and calibration, configured as the core's.
	gen, err := rng.New(rng.DefaultConfig())
	if err != nil {
		fmt.Fprintln(stderr, "avon token: rng:", err)
		return 1
	}
	defer gen.Close()
	sources, err := server.TimeSources(cfg.Calibration, gen)
	if err != nil {
		fmt.Fprintln(stderr, "avon token:", err)
		return 1
	}
	cal, err := calibration.New(calibration.Config{MaxAge: cfg.Calibration.MaxAge, MaxSkew: cfg.Calibration.MaxSkew, Sources: sources},
		calibration.WithLogger(hclog.NewNullLogger()))
	if err == nil {
		err = cal.Calibrate(ctx)
	}
	if err != nil {
		fmt.Fprintln(stderr, "avon token: calibration:", err)
		return 1
	}
	tokens := enroll.NewTokens(kv, gen, cal.Now)
	log := audit.New(kv, nil, nil)
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	switch args[0] {
	case "create":
		if *group == "" {
			fmt.Fprintln(stderr, "avon token create: -group is required")
			return 2
		}
		tok, rec, err := tokens.Create(ctx, *group, *ttl, actor)
		if err == nil {
			// Fail closed: a token whose creation is not on record is revoked.
			if aerr := log.Emit(ctx, "core", host.Event{Actor: actor, Action: "enroll.token.create", Target: "token/" + rec.ID,
				Outcome: "success", Fields: map[string]string{"group": rec.Group, "expires": rec.ExpiresAt.Format(time.RFC3339)}}); aerr != nil {
				_ = tokens.Revoke(ctx, rec.ID)
				err = aerr
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "avon token create:", err)
			return 1
		}
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(map[string]any{"token": tok, "id": rec.ID, "group": rec.Group, "expires_at": rec.ExpiresAt})
		} else {
			fmt.Fprintln(stdout, tok)
			fmt.Fprintf(stderr, "id %s, group %s, expires %s; shown once, only its hash is stored\n", rec.ID, rec.Group, rec.ExpiresAt.Format(time.RFC3339))
		}
		return 0
	case "list":
		list, err := tokens.List(ctx, 1000)
		if err != nil {
			fmt.Fprintln(stderr, "avon token list:", err)
			return 1
		}
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(list)
			return 0
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tGROUP\tEXPIRES\tCREATED BY")
		for _, t := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.ID, t.Group, t.ExpiresAt.Format(time.RFC3339), t.CreatedBy)
		}
		_ = w.Flush()
		return 0
	default: // revoke
		err := tokens.Revoke(ctx, *id)
		if err == nil {
			err = log.Emit(ctx, "core", host.Event{Actor: actor, Action: "enroll.token.revoke", Target: "token/" + *id, Outcome: "success"})
		}
		if err != nil {
			fmt.Fprintln(stderr, "avon token revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "token %s revoked\n", *id)
		return 0
	}
}
