// Package login is the client side of operator login: what `avon login`,
// `avon logout` and the CLI's Admin API calls do. It runs the
// authorization code flow with PKCE (S256) against the core's
// authorization server with a loopback redirect (RFC 8252): it listens on
// 127.0.0.1 on a free port, shows (and optionally opens) the authorization
// URL, waits for the browser's redirect, checks state and issuer, and
// redeems the code. Tokens are kept in a 0600 file under the user's
// configuration directory, written atomically, and refreshed (rotating the
// refresh token) when the access token is about to expire.
//
// It must not import the server side (core/oauth's handlers) beyond its
// constants and wire types, nor trust any certificate it was not told to.
package login

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/internal/atomicfile"
)

// Errors of this package.
var (
	// ErrDenied: the authorization server sent the browser back with an
	// error (access_denied, invalid_request, ...).
	ErrDenied = errors.New("login: authorization refused")
	// ErrState: the redirect carried a wrong state or issuer (a forged or
	// mixed-up response); nothing was redeemed.
	ErrState = errors.New("login: redirect state or issuer mismatch")
	// ErrNotLoggedIn: no tokens are stored, or they can no longer be
	// refreshed; run `avon login`.
	ErrNotLoggedIn = errors.New("login: not logged in")
	// ErrServer: the token endpoint refused (its error code and
	// description follow).
	ErrServer = errors.New("login: token endpoint refused")
)

// Tokens is what `avon login` stores.
type Tokens struct {
	Server       string    `json:"server"`                // the issuer URL
	Fingerprint  string    `json:"fingerprint,omitempty"` // pinned API certificate, hex SHA-256
	CAFile       string    `json:"ca_file,omitempty"`     // or a CA bundle
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	Scope        string    `json:"scope"`
}

// DefaultPath is the tokens file: <user config dir>/avon/tokens.json.
func DefaultPath() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "avon", "tokens.json"), nil
}

// Save writes t to path, 0600, atomically (its directory 0700).
func Save(path string, t Tokens) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(t, "", "  ")
	return atomicfile.Write(path, b, 0o600)
}

// Load reads the tokens at path; ErrNotLoggedIn when there are none.
func Load(path string) (Tokens, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Tokens{}, ErrNotLoggedIn
	}
	if err != nil {
		return Tokens{}, err
	}
	var t Tokens
	if err := json.Unmarshal(b, &t); err != nil || t.Server == "" {
		return Tokens{}, fmt.Errorf("%w: %s is corrupt", ErrNotLoggedIn, path)
	}
	return t, nil
}

// HTTPClient returns a client that trusts the API certificate: pinned by
// its SHA-256 (the self-signed default, as agents pin it to enroll), or
// chaining to the CA bundle in caFile, or the system roots when neither.
func HTTPClient(fingerprint, caFile string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	switch {
	case fingerprint != "":
		want, err := hex.DecodeString(strings.ReplaceAll(strings.ToLower(fingerprint), ":", ""))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("login: fingerprint: want 64 hex digits")
		}
		// The pin replaces chain and name checks (the certificate is
		// self-signed); nothing else is accepted.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no server certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("server certificate sha256 %x is not the pinned %x", got, want)
			}
			return nil
		}
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("login: %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// Options configure Login.
type Options struct {
	Server string       // issuer URL, https://host:8443
	HTTP   *http.Client // trusts the server (HTTPClient)
	Scope  string       // "" = every role of the user
	// Show is given the authorization URL to present (print it, open a
	// browser). It must not block.
	Show func(authorizeURL string)
	// Timeout bounds the wait for the browser (default 5 minutes).
	Timeout time.Duration
	Rand    io.Reader // default crypto/rand
	// ListenAddr is the loopback listener (default 127.0.0.1:0).
	ListenAddr string
}

func random(r io.Reader, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Metadata fetches and checks the server's RFC 8414 metadata: its issuer
// must be server itself (section 3.3), and it must offer S256.
func Metadata(ctx context.Context, c *http.Client, server string) (oauth.Metadata, error) {
	var md oauth.Metadata
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+oauth.PathMetadata, nil)
	if err != nil {
		return md, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return md, fmt.Errorf("login: metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return md, fmt.Errorf("login: metadata: %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&md); err != nil {
		return md, fmt.Errorf("login: metadata: %w", err)
	}
	if md.Issuer != server {
		return md, fmt.Errorf("login: the server says its issuer is %q, not %q (use -server %s)", md.Issuer, server, md.Issuer)
	}
	s256 := false
	for _, m := range md.CodeChallengeMethodsSupported {
		s256 = s256 || m == "S256"
	}
	if !s256 || md.AuthorizationEndpoint == "" || md.TokenEndpoint == "" {
		return md, errors.New("login: the server does not offer the authorization code flow with S256")
	}
	return md, nil
}

type callback struct {
	code string
	err  error
}

// Login runs the flow and returns the tokens (not yet saved).
func Login(ctx context.Context, o Options) (Tokens, error) {
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.ListenAddr == "" {
		o.ListenAddr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	md, err := Metadata(ctx, o.HTTP, o.Server)
	if err != nil {
		return Tokens{}, err
	}
	verifier, err := random(o.Rand, 32)
	if err != nil {
		return Tokens{}, err
	}
	state, err := random(o.Rand, 16)
	if err != nil {
		return Tokens{}, err
	}
	ln, err := net.Listen("tcp", o.ListenAddr)
	if err != nil {
		return Tokens{}, fmt.Errorf("login: loopback listener: %w", err)
	}
	redirect := "http://" + ln.Addr().String() + oauth.CLIRedirectPath
	got := make(chan callback, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+oauth.CLIRedirectPath, func(w http.ResponseWriter, r *http.Request) {
		cb := parseCallback(r.URL.RawQuery, state, md.Issuer)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if cb.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<!doctype html><title>AVON login</title><p>Login failed: %s</p>", htmlEscape(cb.err.Error()))
		} else {
			fmt.Fprint(w, "<!doctype html><title>AVON login</title><p>Logged in. You can close this window and return to the terminal.</p>")
		}
		select {
		case got <- cb:
		default: // a second redirect: the first one decides
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
	}()
	q := url.Values{"response_type": {"code"}, "client_id": {oauth.CLIClientID}, "redirect_uri": {redirect},
		"code_challenge": {oauth.S256(verifier)}, "code_challenge_method": {"S256"}, "state": {state}}
	if o.Scope != "" {
		q.Set("scope", o.Scope)
	}
	if o.Show != nil {
		o.Show(md.AuthorizationEndpoint + "?" + q.Encode())
	}
	var cb callback
	select {
	case cb = <-got:
	case <-ctx.Done():
		return Tokens{}, fmt.Errorf("login: no redirect from the browser: %w", ctx.Err())
	}
	if cb.err != nil {
		return Tokens{}, cb.err
	}
	tr, err := tokenRequest(ctx, o.HTTP, md.TokenEndpoint, url.Values{"grant_type": {"authorization_code"}, "code": {cb.code},
		"redirect_uri": {redirect}, "client_id": {oauth.CLIClientID}, "code_verifier": {verifier}})
	if err != nil {
		return Tokens{}, err
	}
	return Tokens{Server: o.Server, AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken,
		ExpiresAt: time.Now().Add(time.Duration(tr.ExpiresIn) * time.Second), Scope: tr.Scope}, nil
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;").Replace(s)
}

// parseCallback checks the redirect's query: the state must be ours and the
// iss (RFC 9207) the server's, before the code or an error is believed.
func parseCallback(rawQuery, state, issuer string) callback {
	q, err := oauth.ParseParams(rawQuery)
	if err != nil {
		return callback{err: fmt.Errorf("%w: %v", ErrState, err)}
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return callback{err: fmt.Errorf("%w: state", ErrState)}
	}
	if q.Get("iss") != issuer {
		return callback{err: fmt.Errorf("%w: iss %q, want %q", ErrState, q.Get("iss"), issuer)}
	}
	if e := q.Get("error"); e != "" {
		return callback{err: fmt.Errorf("%w: %s: %s", ErrDenied, e, q.Get("error_description"))}
	}
	if q.Get("code") == "" {
		return callback{err: fmt.Errorf("%w: no code", ErrState)}
	}
	return callback{code: q.Get("code")}
}

func tokenRequest(ctx context.Context, c *http.Client, endpoint string, form url.Values) (oauth.TokenResponse, error) {
	var tr oauth.TokenResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return tr, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return tr, fmt.Errorf("login: token endpoint: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var te oauth.TokenError
		if json.Unmarshal(b, &te) == nil && te.Error != "" {
			return tr, fmt.Errorf("%w: %s: %s", ErrServer, te.Error, te.Description)
		}
		return tr, fmt.Errorf("%w: %s", ErrServer, resp.Status)
	}
	if err := json.Unmarshal(b, &tr); err != nil || tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "Bearer") {
		return tr, fmt.Errorf("%w: malformed token response", ErrServer)
	}
	return tr, nil
}

// Refresh rotates t's refresh token and returns the new tokens (save them
// at once: the old refresh token is spent, and presenting it again revokes
// the login).
func Refresh(ctx context.Context, c *http.Client, t Tokens) (Tokens, error) {
	if t.RefreshToken == "" {
		return Tokens{}, ErrNotLoggedIn
	}
	tr, err := tokenRequest(ctx, c, t.Server+oauth.PathToken, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {t.RefreshToken}, "client_id": {oauth.CLIClientID}})
	if err != nil {
		if strings.Contains(err.Error(), "invalid_grant") {
			return Tokens{}, fmt.Errorf("%w: %v", ErrNotLoggedIn, err)
		}
		return Tokens{}, err
	}
	t.AccessToken, t.ExpiresAt, t.Scope = tr.AccessToken, time.Now().Add(time.Duration(tr.ExpiresIn)*time.Second), tr.Scope
	if tr.RefreshToken != "" {
		t.RefreshToken = tr.RefreshToken
	}
	return t, nil
}

// refreshMargin: an access token with less left than this is refreshed
// before use.
const refreshMargin = 30 * time.Second

// Access returns a usable access token from the tokens file at path,
// refreshing (and saving) when it expires within 30 seconds.
func Access(ctx context.Context, path string, now time.Time) (Tokens, error) {
	t, err := Load(path)
	if err != nil {
		return Tokens{}, err
	}
	if now.Add(refreshMargin).Before(t.ExpiresAt) {
		return t, nil
	}
	c, err := HTTPClient(t.Fingerprint, t.CAFile)
	if err != nil {
		return Tokens{}, err
	}
	nt, err := Refresh(ctx, c, t)
	if err != nil {
		return Tokens{}, err
	}
	if err := Save(path, nt); err != nil {
		return Tokens{}, fmt.Errorf("login: save refreshed tokens: %w", err)
	}
	return nt, nil
}

// Logout revokes the login at the server (RFC 7009; the refresh token
// revokes the whole grant) and removes the tokens file. The file is
// removed even when the server cannot be reached; the error says so.
func Logout(ctx context.Context, path string) error {
	t, err := Load(path)
	if err != nil {
		return err
	}
	var rerr error
	if c, err := HTTPClient(t.Fingerprint, t.CAFile); err != nil {
		rerr = err
	} else {
		tok := t.RefreshToken
		if tok == "" {
			tok = t.AccessToken
		}
		form := url.Values{"token": {tok}, "client_id": {oauth.CLIClientID}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.Server+oauth.PathRevoke, strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			var resp *http.Response
			if resp, err = c.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("revocation endpoint: %s", resp.Status)
				}
			}
		}
		rerr = err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Join(rerr, err)
	}
	if rerr != nil {
		return fmt.Errorf("login: tokens removed locally, but the server did not confirm the revocation: %w", rerr)
	}
	return nil
}
