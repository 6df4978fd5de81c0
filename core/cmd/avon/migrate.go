package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/avonzt/avon/core/server"
)

// cmdMigrate applies the configured store's schema migrations and exits, so
// an operator can migrate before rolling out new core replicas.
func cmdMigrate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	status := fs.Bool("status", false, "list migrations and whether each is applied; change nothing")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lines, err := server.Migrate(ctx, *path, *status, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "avon migrate:", err)
		return 1
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return 0
}
