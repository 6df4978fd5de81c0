// Command avon is the AVON core: `avon server` runs it, and the other
// subcommands operate it (`avon config validate`, and the operator CLI as it
// grows), in the manner of vault and nomad. main only parses flags and hands
// over to core/server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/core/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `Usage: avon <command> [flags]

The operator commands talk to the running core over data_dir/admin.sock (the
Admin API, docs/admin-api.md): run them as the core's user, where it runs.
From elsewhere, set AVON_SERVER=https://core:8443 and they use the HTTPS API
with the token of 'avon login', or AVON_API_TOKEN (an API token); pin the API
certificate with AVON_API_FINGERPRINT or AVON_API_CA (default: the login's).
They print tables; -o json prints JSON. Errors show the API's problem.

Commands:
  server            run the core:           avon server -config config.hcl
  config validate   check a configuration:  avon config validate -config config.hcl
  migrate           apply storage schema migrations and exit: avon migrate -config config.hcl [-status]
  audit             query, verify, tail or export the audit log: avon audit query|verify|tail|export -config config.hcl
  token create|list|revoke  enrollment tokens:               avon token create -group eng -ttl 1h -config config.hcl
  agent list|get|disable|enable  enrolled agents:            avon agent disable ID -reason "lost laptop" -config config.hcl
  session list|kill  live tunnel sessions:                    avon session kill ID -config config.hcl
  key list|rotate   keys of the KMS plugins:                  avon key rotate soft/avon-gateway -config config.hcl
  plugin list       plugins: version, state, health, restarts: avon plugin list -config config.hcl
  policy get|apply|validate|dry-run  the policy plugin's sets: avon policy apply eng.cedar -set default -config config.hcl
  ca info|init|rotate  the CA (via the running core's admin socket): avon ca rotate -kms hsm -config config.hcl
  cert list|show|revoke  certificates:                      avon cert revoke SERIAL -reason keyCompromise -config config.hcl
  crl               the current CRL (DER):                    avon crl -o issuing.crl -config config.hcl
  login, logout     operator login (OAuth 2.1, PKCE):         avon login -server https://core:8443 -fingerprint HEX
  user              operator accounts (via the admin socket): avon user add alice -role admin -config config.hcl
  acme eab create   an ACME external account binding key:     avon acme eab create -note team-a -config config.hcl
  apitoken create|list|revoke  scoped API tokens for automation: avon apitoken create ci -scope admin:read -config config.hcl
  version           print the version
`

func main() {
	// Plugins must never outlive the core, even on a panic.
	defer goplugin.CleanupClients()
	os.Exit(runIO(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, strings.NewReader(""), stdout, stderr)
}

func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "server":
		return cmdServer(args[1:], stderr)
	case "config":
		if len(args) < 2 || args[1] != "validate" {
			fmt.Fprint(stderr, "Usage: avon config validate -config FILE\n")
			return 2
		}
		return cmdValidate(args[2:], stdout, stderr)
	case "audit":
		return cmdAudit(args[1:], stdout, stderr)
	case "migrate":
		return cmdMigrate(args[1:], stdout, stderr)
	case "token":
		return cmdToken(args[1:], stdout, stderr)
	case "ca":
		return cmdCA(args[1:], stdout, stderr)
	case "agent", "agents":
		return cmdAgent(args[1:], stdout, stderr)
	case "session", "sessions":
		return cmdSession(args[1:], stdout, stderr)
	case "key", "keys":
		return cmdKey(args[1:], stdout, stderr)
	case "plugin", "plugins":
		return cmdPlugin(args[1:], stdout, stderr)
	case "policy":
		return cmdPolicy(args[1:], stdout, stderr)
	case "cert":
		return cmdCert(args[1:], stdout, stderr)
	case "crl":
		return cmdCRL(args[1:], stdout, stderr)
	case "login":
		return cmdLogin(args[1:], stdout, stderr)
	case "logout":
		return cmdLogout(args[1:], stdout, stderr)
	case "user":
		return cmdUser(args[1:], stdin, stdout, stderr)
	case "acme":
		return cmdACME(args[1:], stdout, stderr)
	case "apitoken", "apitokens":
		return cmdAPIToken(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "avon", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "avon: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "avon %s: unexpected arguments %s\n", name, strings.Join(fs.Args(), " "))
		return "", false
	}
	return *path, true
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("config validate", args, stderr)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := server.Validate(ctx, server.Options{ConfigPath: path, Diagnostics: stderr}, pluginhost.Options{})
	if err != nil {
		if !errors.Is(err, server.ErrInvalidConfig) {
			fmt.Fprintln(stderr, "avon config validate:", err)
		}
		return 1
	}
	v.Close()
	fmt.Fprintf(stdout, "%s: configuration is valid (%d plugins checked)\n", path, len(v.Decoded))
	return 0
}

func cmdServer(args []string, stderr io.Writer) int {
	path, ok := configFlag("server", args, stderr)
	if !ok {
		return 2
	}
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	srv, err := server.Start(startCtx, server.Options{ConfigPath: path, Diagnostics: stderr})
	cancel()
	if err != nil {
		if !errors.Is(err, server.ErrInvalidConfig) {
			fmt.Fprintln(stderr, "avon server:", err)
		}
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			rctx, rcancel := context.WithTimeout(ctx, time.Minute)
			rep, err := srv.Reload(rctx)
			rcancel()
			if err != nil {
				fmt.Fprintln(stderr, "avon server: reload failed, configuration unchanged:", err)
				continue
			}
			fmt.Fprintf(stderr, "avon server: reloaded: applied [%s]; needs restart [%s]\n",
				strings.Join(rep.Applied, ", "), strings.Join(rep.NeedRestart, ", "))
			continue
		}
		fmt.Fprintf(stderr, "avon server: %s received, shutting down\n", sig)
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		err := srv.Stop(sctx)
		scancel()
		if err != nil {
			fmt.Fprintln(stderr, "avon server: shutdown:", err)
			return 1
		}
		return 0
	}
	return 0
}
