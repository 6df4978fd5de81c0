package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/avonzt/avon/core/server"
)

// apiClient talks to the running core's Admin API over its admin socket.
type apiClient struct{ c *http.Client }

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
func adminClient(path string, stderr io.Writer) (*apiClient, bool) {
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
	return &apiClient{c: &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}, true
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
	req, err := http.NewRequest(method, "http://avon-admin"+path, rd)
	if err != nil {
		return nil, err
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
