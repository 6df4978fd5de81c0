package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/sdk/host"
)

// Cache sets of the authorization flow.
const (
	setLogin = "oauth-login" // pending login forms, by CSRF token hash
	setCode  = "oauth-code"  // authorization codes, by code hash
)

// loginCookie carries the CSRF token of the login form; __Host- keeps it
// to this origin, over TLS, path /.
const loginCookie = "__Host-avon-login"

// A PKCE challenge is BASE64URL(SHA-256(verifier)): 43 characters; a
// verifier is 43 to 128 unreserved characters (RFC 7636 section 4.1).
var (
	challengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	verifierRE  = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)
)

// authRequest is a checked authorization request, kept server side while
// the user logs in and then inside the code.
type authRequest struct {
	ClientID    string `json:"client_id"`
	RedirectURI string `json:"redirect_uri"`
	Challenge   string `json:"code_challenge"`
	State       string `json:"state,omitempty"`
	Scope       string `json:"scope,omitempty"` // requested; "" = every role of the user
	// Set when the code is issued.
	User     string `json:"user,omitempty"`
	AuthTime int64  `json:"auth_time,omitempty"`
}

// redirectAllowed reports whether uri is one of the client's redirects:
// exact, or loopback with any port and the exact path (RFC 8252 7.3).
func (c Client) redirectAllowed(uri string) bool {
	if slices.Contains(c.RedirectURIs, uri) {
		return true
	}
	if c.LoopbackPath == "" {
		return false
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "http" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		u.RawPath != "" || strings.Contains(uri, "#") || strings.Contains(uri, "?") {
		return false
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" || (host != "127.0.0.1" && host != "::1") {
		return false
	}
	return u.Path == c.LoopbackPath
}

// authError is an error the authorization endpoint returns to the client
// through its redirect (RFC 6749 section 4.1.2.1).
type authError struct {
	code, desc string
}

func (e *authError) Error() string { return e.code + ": " + e.desc }

// checkAuthorize checks an authorization request. A bad client or redirect
// is told to the user (never redirected); anything else goes back to the
// client as an authError.
func (s *Server) checkAuthorize(q map[string][]string) (authRequest, error) {
	get := func(k string) string {
		if v := q[k]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	c, ok := s.clients[get("client_id")]
	if !ok {
		return authRequest{}, fmt.Errorf("%w: unknown client_id %q", ErrInvalidClient, clip(get("client_id")))
	}
	ru := get("redirect_uri")
	if !c.redirectAllowed(ru) {
		return authRequest{}, fmt.Errorf("%w: redirect_uri %q is not registered for %s", ErrInvalidRequest, clip(ru), c.ID)
	}
	ar := authRequest{ClientID: c.ID, RedirectURI: ru, State: get("state")}
	if len(ar.State) > 512 {
		return ar, &authError{"invalid_request", "state longer than 512 characters"}
	}
	if rt := get("response_type"); rt != "code" {
		return ar, &authError{"unsupported_response_type", "only response_type=code"}
	}
	if m := get("code_challenge_method"); m != "S256" {
		return ar, &authError{"invalid_request", fmt.Sprintf("code_challenge_method %q: only S256 (PKCE is required; plain is refused)", clip(m))}
	}
	ar.Challenge = get("code_challenge")
	if !challengeRE.MatchString(ar.Challenge) {
		return ar, &authError{"invalid_request", "code_challenge missing or not 43 base64url characters (S256)"}
	}
	for _, sc := range strings.Fields(get("scope")) {
		if !slices.Contains(Roles, sc) {
			return ar, &authError{"invalid_scope", fmt.Sprintf("scope %q; want some of %s", clip(sc), strings.Join(Roles, " "))}
		}
	}
	ar.Scope = strings.Join(strings.Fields(get("scope")), " ")
	return ar, nil
}

// redirectError sends the user back to the client with an error.
func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, ar authRequest, e *authError) {
	q := url.Values{"error": {e.code}, "error_description": {e.desc}, "iss": {s.cfg.Issuer}}
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	http.Redirect(w, r, ar.RedirectURI+"?"+q.Encode(), http.StatusSeeOther)
}

// authorizeForm is GET /oauth/authorize: check the request, then show the
// login form.
func (s *Server) authorizeForm(w http.ResponseWriter, r *http.Request) {
	q, err := ParseParams(r.URL.RawQuery)
	if err != nil {
		s.page(w, http.StatusBadRequest, pageData{Error: err.Error()})
		return
	}
	ar, err := s.checkAuthorize(q)
	var ae *authError
	if errors.As(err, &ae) {
		s.redirectError(w, r, ar, ae)
		return
	}
	if err != nil {
		s.page(w, http.StatusBadRequest, pageData{Error: err.Error()})
		return
	}
	s.showLogin(w, r, http.StatusOK, ar, "", "")
}

// showLogin stores the request under a fresh CSRF token and renders the
// form carrying that token (also set as a cookie: both must come back).
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, ar authRequest, user, msg string) {
	raw, err := s.grants.random(32)
	if err != nil {
		s.page(w, http.StatusServiceUnavailable, pageData{Error: "temporarily unavailable"})
		return
	}
	csrf := b64.EncodeToString(raw)
	b, _ := json.Marshal(ar)
	if err := s.deps.Cache.PutToken(r.Context(), setLogin, hashHex(csrf), b, LoginTTL); err != nil {
		s.log.Error("login form not stored", "error", err)
		s.page(w, http.StatusServiceUnavailable, pageData{Error: "temporarily unavailable; try again"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: csrf, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(LoginTTL / time.Second)})
	s.page(w, status, pageData{CSRF: csrf, User: user, Error: msg, Client: ar.ClientID, Scope: ar.Scope, Action: PathAuthorize})
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// authorizeLogin is POST /oauth/authorize: the login form's submission.
func (s *Server) authorizeLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f, err := readForm(w, r)
	if err != nil {
		s.page(w, http.StatusBadRequest, pageData{Error: err.Error()})
		return
	}
	csrf := f.Get("csrf")
	ck, cerr := r.Cookie(loginCookie)
	if csrf == "" || cerr != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(csrf)) != 1 {
		s.page(w, http.StatusForbidden, pageData{Error: "the login form is not this browser's (CSRF check failed); start the login again"})
		return
	}
	b, err := s.deps.Cache.ConsumeToken(ctx, setLogin, hashHex(csrf))
	if err != nil {
		code, msg := http.StatusBadRequest, "the login form expired or was already used; start the login again"
		if !errors.Is(err, cache.ErrNotFound) {
			code, msg = http.StatusServiceUnavailable, "temporarily unavailable; try again"
		}
		s.page(w, code, pageData{Error: msg})
		return
	}
	var ar authRequest
	if err := json.Unmarshal(b, &ar); err != nil {
		s.page(w, http.StatusBadRequest, pageData{Error: "the login form is corrupt; start again"})
		return
	}
	user, src := f.Get("username"), sourceOf(r)
	fail := func(status int, reason, msg string) {
		_ = s.emit(ctx, host.Event{Actor: "user:" + clip(user), Action: "oauth.login", Target: "client/" + ar.ClientID,
			Outcome: "failure", Reason: reason, Fields: map[string]string{"source": src}})
		s.showLogin(w, r, status, ar, user, msg)
	}
	// Throttle before any password work: a name or address with too many
	// recent failures is locked out for the window.
	limits := []throttleKey{{"user:" + hashHex(user), s.cfg.PerUser}, {"src:" + src, s.cfg.PerSource}}
	for _, k := range limits {
		if left, locked := s.locked(ctx, k); locked {
			fail(http.StatusTooManyRequests, ErrThrottled.Error(), fmt.Sprintf("Too many failed logins; try again in %s.", left.Round(time.Second)))
			return
		}
	}
	u, err := s.users.Authenticate(ctx, user, f.Get("password"), strings.TrimSpace(f.Get("code")))
	switch {
	case errors.Is(err, ErrBadCredentials):
		for _, k := range limits {
			s.countFailure(ctx, k)
		}
		fail(http.StatusUnauthorized, err.Error(), "Invalid user name, password or code.")
		return
	case err != nil:
		s.log.Error("login failed on a dependency", "error", err)
		fail(http.StatusServiceUnavailable, err.Error(), "Temporarily unavailable; try again.")
		return
	}
	scope := grantScope(ar.Scope, u.Roles)
	if scope == "" {
		_ = s.emit(ctx, host.Event{Actor: "user:" + u.Name, Action: "oauth.login", Target: "client/" + ar.ClientID,
			Outcome: "denied", Reason: "no requested scope among the user's roles", Fields: map[string]string{"source": src, "scope": ar.Scope}})
		s.redirectError(w, r, ar, &authError{"access_denied", "the user holds none of the requested scopes"})
		return
	}
	now, err := s.now()
	if err != nil {
		s.page(w, http.StatusServiceUnavailable, pageData{Error: err.Error()})
		return
	}
	raw, err := s.grants.random(32)
	if err != nil {
		s.page(w, http.StatusServiceUnavailable, pageData{Error: "temporarily unavailable"})
		return
	}
	code := b64.EncodeToString(raw)
	ar.User, ar.AuthTime, ar.Scope = u.Name, now.Unix(), scope
	cb, _ := json.Marshal(ar)
	// On record before the code exists: a login that cannot be audited
	// does not happen.
	if err := s.emit(ctx, host.Event{Actor: "user:" + u.Name, Action: "oauth.login", Target: "client/" + ar.ClientID,
		Outcome: "success", Fields: map[string]string{"source": src, "scope": scope, "totp": fmt.Sprint(len(u.TOTPSecret) > 0)}}); err != nil {
		s.page(w, http.StatusServiceUnavailable, pageData{Error: "temporarily unavailable (audit)"})
		return
	}
	if err := s.deps.Cache.PutToken(ctx, setCode, hashHex(code), cb, CodeTTL); err != nil {
		s.log.Error("authorization code not stored", "error", err)
		s.page(w, http.StatusServiceUnavailable, pageData{Error: "temporarily unavailable; try again"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, MaxAge: -1})
	q := url.Values{"code": {code}, "iss": {s.cfg.Issuer}}
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	http.Redirect(w, r, ar.RedirectURI+"?"+q.Encode(), http.StatusSeeOther)
}

// Scopes returns the scopes roles entitle to: each role's own, and for
// admin every scope.
func Scopes(roles []string) []string {
	if slices.Contains(roles, RoleAdmin) {
		return slices.Clone(Roles)
	}
	var out []string
	for _, r := range Roles {
		if slices.Contains(roles, r) {
			out = append(out, r)
		}
	}
	return out
}

// grantScope is the requested scope narrowed to what the user's roles
// entitle to, or all of that when nothing was requested; in canonical
// order.
func grantScope(requested string, roles []string) string {
	have := Scopes(roles)
	want := strings.Fields(requested)
	if len(want) == 0 {
		want = have
	}
	var out []string
	for _, r := range Roles {
		if slices.Contains(want, r) && slices.Contains(have, r) {
			out = append(out, r)
		}
	}
	return strings.Join(out, " ")
}

type pageData struct {
	CSRF, User, Error, Client, Scope, Action string
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AVON operator login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:22em;margin:4em auto}label{display:block;margin-top:1em}
input{width:100%;padding:.4em}.err{color:#b00}button{margin-top:1.5em;padding:.5em 2em}</style></head>
<body><h1>AVON</h1>
{{if .Error}}<p class="err" role="alert">{{.Error}}</p>{{end}}
{{if .CSRF}}<p>Sign in for <b>{{.Client}}</b>{{if .Scope}} (scope: {{.Scope}}){{end}}.</p>
<form method="post" action="{{.Action}}" autocomplete="on">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label>User name <input name="username" value="{{.User}}" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<label>One-time code (if enabled) <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}"></label>
<button type="submit">Sign in</button>
</form>{{end}}
</body></html>
`))

// page renders the login page (or an error page without a form). The page
// may not be framed and keeps no referrer (the URL holds the request).
func (s *Server) page(w http.ResponseWriter, status int, d pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, d)
}

// throttleKey is one login rate limit: failures per name or per address.
type throttleKey struct {
	key string
	t   Throttle
}

// locked reports whether k is locked out, and for how long still. Cache
// errors fail open (logged): a cache outage must not lock every operator
// out, and the password still has to be right.
func (s *Server) locked(ctx context.Context, k throttleKey) (time.Duration, bool) {
	_, left, err := s.deps.Cache.GetSession(ctx, "oauth-lock:"+k.key)
	if err == nil {
		return left, true
	}
	if !errors.Is(err, cache.ErrNotFound) {
		s.log.Warn("login throttle not checked (failing open)", "error", err)
	}
	return 0, false
}

// countFailure counts a failed login against k with a cache counter
// (cache.AllowFailOpen) and locks k for the window once the limit is
// reached. Successful logins are not counted.
func (s *Server) countFailure(ctx context.Context, k throttleKey) {
	d := cache.AllowFailOpen(ctx, s.deps.Cache, s.log, "oauth-fail:"+k.key, k.t.Attempts, k.t.Window)
	if d.Allowed && d.Remaining > 0 {
		return
	}
	ttl := k.t.Window
	if d.RetryAfter > 0 {
		ttl = d.RetryAfter
	}
	if err := s.deps.Cache.PutSession(ctx, "oauth-lock:"+k.key, []byte("1"), ttl); err != nil {
		s.log.Warn("login lockout not stored (failing open)", "error", err)
	}
}
