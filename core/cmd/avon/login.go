package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/oauth/login"
	"github.com/avonzt/avon/core/server"
)

const loginUsage = `Usage:
  avon login [-server https://host:8443] [-fingerprint HEX | -ca FILE] [-scope "operator auditor"] [-no-browser]
      log in as an operator (OAuth 2.1 authorization code + PKCE, loopback redirect); the
      tokens are kept 0600 in the user's config directory and refreshed when they expire.
      -server and the trust settings default to those of the last login.
  avon logout      revoke the login at the server and forget the tokens

The API certificate is self-signed until the CA issues one: pin it with
-fingerprint (the core logs it at start as "api certificate sha256=...").
`

func cmdLogin(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	srv := fs.String("server", "", "the core's API URL (its auth issuer)")
	fp := fs.String("fingerprint", "", "hex SHA-256 of the API certificate to pin")
	ca := fs.String("ca", "", "PEM CA bundle to verify the API certificate with")
	scope := fs.String("scope", "", "scopes to ask for (default: all of the user's roles)")
	noBrowser := fs.Bool("no-browser", false, "only print the login URL")
	tokens := fs.String("tokens", "", "tokens file (default <user config dir>/avon/tokens.json)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the browser")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, loginUsage)
		return 2
	}
	path, err := tokensPath(*tokens)
	if err != nil {
		fmt.Fprintln(stderr, "avon login:", err)
		return 1
	}
	if prev, err := login.Load(path); err == nil {
		if *srv == "" {
			*srv = prev.Server
		}
		if *fp == "" && *ca == "" && *srv == prev.Server {
			*fp, *ca = prev.Fingerprint, prev.CAFile
		}
	}
	if *srv == "" {
		fmt.Fprintln(stderr, "avon login: -server is required the first time")
		return 2
	}
	*srv = strings.TrimSuffix(*srv, "/")
	hc, err := login.HTTPClient(*fp, *ca)
	if err != nil {
		fmt.Fprintln(stderr, "avon login:", err)
		return 2
	}
	tok, err := login.Login(context.Background(), login.Options{Server: *srv, HTTP: hc, Scope: *scope, Timeout: *timeout,
		Show: func(u string) {
			fmt.Fprintf(stderr, "Open this URL in a browser on this machine to log in:\n\n  %s\n\nWaiting for the browser...\n", u)
			if !*noBrowser {
				openBrowser(u)
			}
		}})
	if err != nil {
		fmt.Fprintln(stderr, "avon login:", err)
		return 1
	}
	tok.Fingerprint, tok.CAFile = *fp, *ca
	if err := login.Save(path, tok); err != nil {
		fmt.Fprintln(stderr, "avon login: save tokens:", err)
		return 1
	}
	fmt.Fprintf(stdout, "logged in to %s (scope: %s); tokens in %s\n", tok.Server, tok.Scope, path)
	return 0
}

func cmdLogout(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("logout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokens := fs.String("tokens", "", "tokens file (default <user config dir>/avon/tokens.json)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, loginUsage)
		return 2
	}
	path, err := tokensPath(*tokens)
	if err != nil {
		fmt.Fprintln(stderr, "avon logout:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := login.Logout(ctx, path); err != nil {
		if errors.Is(err, login.ErrNotLoggedIn) {
			fmt.Fprintln(stdout, "not logged in")
			return 0
		}
		fmt.Fprintln(stderr, "avon logout:", err)
		return 1
	}
	fmt.Fprintln(stdout, "logged out")
	return 0
}

func tokensPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	return login.DefaultPath()
}

// openBrowser tries the desktop's opener; the URL is printed either way.
func openBrowser(u string) {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return
	}
	cmd := exec.Command(p, u)
	if cmd.Start() == nil {
		go func() { _ = cmd.Wait() }()
	}
}

const userUsage = `Usage:
  avon user add NAME -role admin|operator|auditor [-role ...] -config config.hcl
  avon user passwd NAME -config ...
  avon user roles NAME -role ... -config ...
  avon user totp enable|disable NAME -config ...
  avon user delete NAME -config ...
  avon user list [-json] -config ...

Operator accounts for 'avon login'. These commands talk to the running core
over data_dir/admin.sock (0600), so they need no login: run them as the core's
user, where the core runs. Passwords are read from the terminal (twice, not
echoed) or, when stdin is not a terminal, as its first line.
`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdUser(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return 2
	}
	sub := args[0]
	rest := args[1:]
	if sub == "totp" {
		if len(rest) == 0 || (rest[0] != "enable" && rest[0] != "disable") {
			fmt.Fprint(stderr, userUsage)
			return 2
		}
		sub, rest = "totp "+rest[0], rest[1:]
	}
	switch sub {
	case "add", "passwd", "roles", "totp enable", "totp disable", "delete", "list":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, userUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "avon user: unknown command %q\n\n%s", sub, userUsage)
		return 2
	}
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	asJSON := fs.Bool("json", false, "JSON output")
	var roles multiFlag
	fs.Var(&roles, "role", "a role: admin, operator or auditor (repeat for several)")
	// Flags may follow the name: avon user add alice -role admin.
	var name string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "avon user %s: unexpected arguments %s\n", sub, strings.Join(fs.Args(), " "))
		return 2
	}
	if sub != "list" && name == "" {
		fmt.Fprintf(stderr, "avon user %s: a user name is required\n", sub)
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "avon user %s: %v\n", sub, err)
		return 1
	}
	switch sub {
	case "list":
		var list []oauth.UserInfo
		if err := adminDo(c, "GET", "/v1/users", nil, &list); err != nil {
			return fail(err)
		}
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(list)
			return 0
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tROLES\tTOTP\tDISABLED\tCREATED\tCREATED BY")
		for _, u := range list {
			fmt.Fprintf(w, "%s\t%s\t%v\t%v\t%s\t%s\n", u.Name, strings.Join(u.Roles, ","), u.TOTP, u.Disabled,
				u.CreatedAt.Format(time.RFC3339), u.CreatedBy)
		}
		_ = w.Flush()
		return 0
	case "add", "passwd":
		if sub == "add" && len(roles) == 0 {
			fmt.Fprintln(stderr, "avon user add: at least one -role is required (admin, operator, auditor)")
			return 2
		}
		pw, err := readPassword(stdin, stderr)
		if err != nil {
			return fail(err)
		}
		var out map[string]any
		if sub == "add" {
			err = adminDo(c, "POST", "/v1/users", server.UserRequest{Name: name, Password: pw, Roles: roles}, &out)
		} else {
			err = adminDo(c, "PUT", "/v1/users/"+name+"/password", map[string]string{"password": pw}, &out)
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "user %s: %s\n", name, map[string]string{"add": "created", "passwd": "password changed"}[sub])
		return 0
	case "roles":
		var out oauth.UserInfo
		if err := adminDo(c, "PUT", "/v1/users/"+name+"/roles", map[string][]string{"roles": roles}, &out); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "user %s: roles %s\n", name, strings.Join(out.Roles, ","))
		return 0
	case "totp enable":
		var out server.TOTPResult
		if err := adminDo(c, "POST", "/v1/users/"+name+"/totp", nil, &out); err != nil {
			return fail(err)
		}
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(out)
			return 0
		}
		fmt.Fprintf(stdout, "TOTP enabled for %s. Add it to an authenticator app (shown once):\n  secret  %s\n  uri     %s\n", name, out.Secret, out.URI)
		return 0
	case "totp disable":
		var out map[string]any
		if err := adminDo(c, "DELETE", "/v1/users/"+name+"/totp", nil, &out); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "TOTP disabled for %s\n", name)
		return 0
	default: // delete
		var out map[string]any
		if err := adminDo(c, "DELETE", "/v1/users/"+name, nil, &out); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "user %s deleted\n", name)
		return 0
	}
}

// readPassword reads a new password: from the terminal twice without echo,
// or the first line of stdin when it is not a terminal.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok {
		if old, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			noEcho := *old
			noEcho.Lflag &^= unix.ECHO
			if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &noEcho); err == nil {
				defer func() { _ = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, old) }()
				r := bufio.NewReader(f)
				fmt.Fprint(stderr, "New password: ")
				a, err := r.ReadString('\n')
				fmt.Fprintln(stderr)
				if err != nil {
					return "", err
				}
				fmt.Fprint(stderr, "Again: ")
				b, err := r.ReadString('\n')
				fmt.Fprintln(stderr)
				if err != nil {
					return "", err
				}
				if a != b {
					return "", errors.New("the passwords differ")
				}
				return strings.TrimRight(a, "\r\n"), nil
			}
		}
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("read the password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
