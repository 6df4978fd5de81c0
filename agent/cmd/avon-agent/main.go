// Command avon-agent is the AVON endpoint agent: `enroll` gives the agent
// its ML-DSA-65 identity with a one-time token, `renew` replaces it before
// it expires, `up` runs the post-quantum tunnel to the gateway (agent/tunnel
// on a TUN device, the interface configured through internal/netcfg),
// `down` stops it and removes what it configured, `status` prints the
// tunnel's state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/avonzt/avon/agent/enroll"
	"github.com/avonzt/avon/core/rng"
)

const usage = `Usage: avon-agent <command> [flags]

Commands:
  enroll   avon-agent enroll --server https://core:8443 --token avon-enroll-v1.… \
                             --server-fingerprint <sha256 of the core's API certificate> \
                             [--state-dir /var/lib/avon-agent]
  renew    avon-agent renew --server-fingerprint <sha256> [--state-dir …] [--force]
           (a new key and certificate, authenticated by the current one; due
           in the last third of the certificate's lifetime)
  up       avon-agent up [-state /var/lib/avon-agent] [-gateway host:port] [-foreground]
           (needs root or CAP_NET_ADMIN and /dev/net/tun)
  down     avon-agent down [-state …]
  status   avon-agent status [-state …] [-json]
`

const defaultStateDir = "/var/lib/avon-agent"

var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "enroll":
		return cmdEnroll(args[1:], stdout, stderr)
	case "renew":
		return cmdRenew(args[1:], stdout, stderr)
	case "up":
		return cmdUp(args[1:], stdout, stderr)
	case "down":
		return cmdDown(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "avon-agent: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func cmdEnroll(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o enroll.Options
	fs.StringVar(&o.Server, "server", "", "the core's API, https://host:port")
	fs.StringVar(&o.Token, "token", "", "one-time enrollment token (avon token create); or AVON_ENROLL_TOKEN")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/avon-agent", "where the key, certificates and bundle are kept (0700)")
	fs.StringVar(&o.ServerFingerprint, "server-fingerprint", "", "SHA-256 of the core's API certificate (hex)")
	fs.StringVar(&o.CAFile, "ca-file", "", "PEM CA that signed the core's API certificate")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	if o.Token == "" {
		o.Token = os.Getenv("AVON_ENROLL_TOKEN") // keeps it out of the process list
	}
	gen, err := rng.New(rng.DefaultConfig())
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent enroll: rng:", err)
		return 1
	}
	defer gen.Close()
	o.Rand = gen
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	b, err := enroll.Enroll(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent enroll:", err)
		return 1
	}
	fmt.Fprintf(stdout, "enrolled as agent %s (group %s); certificate valid until %s; state in %s\n",
		b.AgentID, b.Group, b.NotAfter.Format(time.RFC3339), o.StateDir)
	return 0
}

func cmdRenew(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("renew", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o enroll.RenewOptions
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/avon-agent", "the agent's state directory")
	fs.StringVar(&o.ServerFingerprint, "server-fingerprint", "", "SHA-256 of the core's API certificate (hex)")
	fs.StringVar(&o.CAFile, "ca-file", "", "PEM CA that signed the core's API certificate")
	fs.BoolVar(&o.Force, "force", false, "renew even when not due")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	gen, err := rng.New(rng.DefaultConfig())
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent renew: rng:", err)
		return 1
	}
	defer gen.Close()
	o.Rand = gen
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := enroll.Renew(ctx, o)
	if errors.Is(err, enroll.ErrNotDue) {
		fmt.Fprintln(stdout, "avon-agent renew:", err)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent renew:", err)
		return 1
	}
	fmt.Fprintf(stdout, "renewed agent %s: new key, certificate valid until %s\n", b.AgentID, b.NotAfter.Format(time.RFC3339))
	return 0
}
