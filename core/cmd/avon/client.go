package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/oauth/login"
	"github.com/avonzt/avon/core/server"
)

// apiClient talks to the running core's Admin API over its admin socket.
// apiClient calls the Admin API: over the admin socket (base
// "http://avon-admin", the kernel authenticates the caller), or over HTTPS
// to AVON_SERVER with a bearer token (remoteClient).
type apiClient struct {
	c    *http.Client
	base string
	// bearer returns the token for the Authorization header (nil on the socket).
	bearer func(ctx context.Context) (string, error)
}

// problemError is a problem the Admin API answered.
type problemError struct {
	adminapi.Problem
}

func (e *problemError) Error() string {
	s := fmt.Sprintf("%d %s", e.Status, e.Title)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	slug := strings.TrimPrefix(e.Type, adminapi.ProblemBase)
	if e.RequestID != "" {
		return fmt.Sprintf("%s [%s, request %s]", s, slug, e.RequestID)
	}
	return fmt.Sprintf("%s [%s]", s, slug)
}

// adminClient returns a client over the admin socket of the core the
// configuration at path describes.
// Environment of remote use: the CLI talks to AVON_SERVER's HTTPS API
// instead of the local admin socket.
const (
	envServer      = "AVON_SERVER"          // https://core:8443
	envAPIToken    = "AVON_API_TOKEN"       // an API token (avon apitoken create); else the avon login tokens
	envFingerprint = "AVON_API_FINGERPRINT" // pin of the API certificate (hex SHA-256)
	envCA          = "AVON_API_CA"          // or a PEM CA bundle
)

func adminClient(path string, stderr io.Writer) (*apiClient, bool) {
	if srv := os.Getenv(envServer); srv != "" {
		c, err := remoteClient(srv)
		if err != nil {
			fmt.Fprintf(stderr, "avon: %s=%s: %v\n", envServer, srv, err)
			return nil, false
		}
		return c, true
	}
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if cfg != nil {
			files = cfg.Files
		}
		_ = config.WriteDiagnostics(stderr, files, diags)
		return nil, false
	}
	sock := filepath.Join(cfg.DataDir, server.AdminSocket)
	if _, err := os.Stat(sock); err != nil {
		fmt.Fprintf(stderr, "avon: no admin socket at %s: is the core running with this configuration? (%v)\n", sock, err)
		return nil, false
	}
	return &apiClient{base: "http://avon-admin", c: &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}, true
}

// remoteClient is the Admin API at srv over HTTPS: authenticated by
// AVON_API_TOKEN when set, else by the access token of `avon login` (to
// the same server), refreshed when it expires. The API certificate is
// checked against AVON_API_FINGERPRINT or AVON_API_CA, else the pin of
// that login, else the system roots.
func remoteClient(srv string) (*apiClient, error) {
	u, err := url.Parse(srv)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, errors.New("want the core's API URL, https://host:port")
	}
	srv = "https://" + u.Host
	fp, ca := os.Getenv(envFingerprint), os.Getenv(envCA)
	tokPath, err := tokensPath("")
	if err != nil {
		return nil, err
	}
	prev, loginErr := login.Load(tokPath)
	sameServer := loginErr == nil && strings.TrimSuffix(prev.Server, "/") == srv
	if fp == "" && ca == "" && sameServer {
		fp, ca = prev.Fingerprint, prev.CAFile
	}
	hc, err := login.HTTPClient(fp, ca)
	if err != nil {
		return nil, err
	}
	hc.Timeout = 5 * time.Minute
	c := &apiClient{c: hc, base: srv}
	if tok := os.Getenv(envAPIToken); tok != "" {
		c.bearer = func(context.Context) (string, error) { return tok, nil }
		return c, nil
	}
	if !sameServer {
		return nil, fmt.Errorf("not logged in to %s: run `avon login -server %s`, or set %s to an API token", srv, srv, envAPIToken)
	}
	c.bearer = func(ctx context.Context) (string, error) {
		t, err := login.Access(ctx, tokPath, time.Now())
		if err != nil {
			return "", fmt.Errorf("login to %s: %w (run `avon login`)", srv, err)
		}
		return t.AccessToken, nil
	}
	return c, nil
}

// call sends a request and decodes a success body into into (a *[]byte
// takes it raw; nil ignores it). It returns the response headers.
func (a *apiClient) call(method, path string, hdr map[string]string, body, into any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return nil, err
	}
	if a.bearer != nil {
		tok, err := a.bearer(req.Context())
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var p problemError
		if json.Unmarshal(b, &p.Problem) == nil && p.Status != 0 {
			return resp.Header, &p
		}
		return resp.Header, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	switch v := into.(type) {
	case nil:
		return resp.Header, nil
	case *[]byte:
		*v = b
		return resp.Header, nil
	}
	if err := json.Unmarshal(b, into); err != nil {
		return resp.Header, fmt.Errorf("reading the answer: %w", err)
	}
	return resp.Header, nil
}

// adminDo is call without headers.
func adminDo(c *apiClient, method, path string, body any, into any) error {
	_, err := c.call(method, path, nil, body, into)
	return err
}

// maxPages bounds the pages a list command follows.
const maxPages = 100_000

// listAll follows a listing's pages and returns every item: pages of 1000,
// or fewer to stop at limit items when limit > 0. q holds the listing's
// filters; items picks the items and the next page token out of a page.
func listAll[P, T any](c *apiClient, path string, q url.Values, limit int, items func(*P) ([]T, string)) ([]T, error) {
	all := []T{}
	tok := ""
	for range maxPages {
		size := 1000
		if limit > 0 {
			size = min(size, limit-len(all))
		}
		q.Set("page_size", fmt.Sprint(size))
		q.Set("page_token", tok)
		var page P
		if err := adminDo(c, "GET", path+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		got, next := items(&page)
		all = append(all, got...)
		if tok = next; tok == "" || (limit > 0 && len(all) >= limit) {
			break
		}
	}
	return all, nil
}

// outputFlags are the flags every admin command takes.
type outputFlags struct {
	path   *string
	output *string
	asJSON *bool
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, outputFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, outputFlags{
		path:   fs.String("config", "config.hcl", "configuration file (the core's admin socket is under its data_dir)"),
		output: fs.String("o", "table", "output: table or json"),
		asJSON: fs.Bool("json", false, "same as -o json"),
	}
}

func (o outputFlags) json() bool { return *o.asJSON || *o.output == "json" }

func (o outputFlags) valid(stderr io.Writer) bool {
	if *o.output != "table" && *o.output != "json" {
		fmt.Fprintf(stderr, "avon: -o %q: want table or json\n", *o.output)
		return false
	}
	return true
}

// parseWithArg parses args where one positional argument may come before
// or after the flags, and returns it ("" when absent).
func parseWithArg(fs *flag.FlagSet, args []string) (string, bool) {
	var arg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arg, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	switch {
	case arg == "" && fs.NArg() == 1:
		arg = fs.Arg(0)
	case fs.NArg() > 0:
		return "", false
	}
	return arg, true
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
