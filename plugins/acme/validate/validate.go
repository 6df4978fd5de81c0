// Package validate checks ACME challenges over the network: http-01 (a GET
// of the key authorization), dns-01 (a TXT record of its digest) and
// tls-alpn-01 (a self-signed certificate with the acmeIdentifier extension,
// RFC 8737). Ports and the DNS resolver are configurable so tests and
// split-horizon deployments point them where the names really resolve.
//
// Every lookup and connection is bounded by the caller's context; a
// response body is read up to a small limit. It must not follow
// redirects, cache answers or keep connections.
package validate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/avonzt/avon/plugins/acme/server"
)

// Config configures a Validator. Zero values take the defaults.
type Config struct {
	// Resolver is the host:port of the DNS server asked for A, AAAA and
	// TXT records; "" uses the system resolver.
	Resolver string
	// HTTPPort is where http-01 connects (80).
	HTTPPort int
	// TLSALPNPort is where tls-alpn-01 connects (443).
	TLSALPNPort int
}

// Validator implements server.Validator.
type Validator struct{ cfg Config }

// New returns a validator.
func New(cfg Config) *Validator {
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 80
	}
	if cfg.TLSALPNPort == 0 {
		cfg.TLSALPNPort = 443
	}
	return &Validator{cfg: cfg}
}

// maxBody bounds an http-01 response body.
const maxBody = 4 << 10

// Validate implements server.Validator.
func (v *Validator) Validate(ctx context.Context, req server.ValidationRequest) *server.Problem {
	switch req.Type {
	case server.ChallengeHTTP01:
		return v.http01(ctx, req)
	case server.ChallengeDNS01:
		return v.dns01(ctx, req)
	case server.ChallengeTLSALPN01:
		return v.tlsALPN01(ctx, req)
	}
	return server.NewProblem(server.ProbMalformed, "unknown challenge type "+req.Type)
}

// query asks the configured resolver one question.
func (v *Validator) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	c := &dns.Client{Net: "udp"}
	r, _, err := c.ExchangeContext(ctx, m, v.cfg.Resolver)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, v.cfg.Resolver)
	}
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s", dns.RcodeToString[r.Rcode])
	}
	return r.Answer, nil
}

// lookupIP resolves a name to its addresses, IPv4 first.
func (v *Validator) lookupIP(ctx context.Context, name string) ([]net.IP, error) {
	if v.cfg.Resolver == "" {
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, name)
		if err != nil {
			return nil, err
		}
		var ips []net.IP
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
		slices.SortStableFunc(ips, func(a, b net.IP) int {
			return boolInt(a.To4() == nil) - boolInt(b.To4() == nil)
		})
		return ips, nil
	}
	var ips []net.IP
	var errs []error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := v.query(ctx, name, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				ips = append(ips, a.A)
			case *dns.AAAA:
				ips = append(ips, a.AAAA)
			}
		}
	}
	if len(ips) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, fmt.Errorf("no A or AAAA record")
	}
	return ips, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func dnsProblem(name string, err error) *server.Problem {
	return server.NewProblem(server.ProbDNS, fmt.Sprintf("DNS problem looking up %s: %v", name, err))
}

// http01 is RFC 8555 8.3.
func (v *Validator) http01(ctx context.Context, req server.ValidationRequest) *server.Problem {
	ips, err := v.lookupIP(ctx, req.Domain)
	if err != nil {
		return dnsProblem(req.Domain, err)
	}
	path := "/.well-known/acme-challenge/" + req.Token
	var last *server.Problem
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(v.cfg.HTTPPort))
		client := &http.Client{
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		hr, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+req.Domain+path, nil)
		if err != nil {
			return server.NewProblem(server.ProbMalformed, err.Error())
		}
		resp, err := client.Do(hr)
		if err != nil {
			last = server.NewProblem(server.ProbConnection, fmt.Sprintf("fetching http://%s%s from %s: %v", req.Domain, path, addr, err))
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
		_ = resp.Body.Close()
		switch {
		case err != nil:
			return server.NewProblem(server.ProbConnection, fmt.Sprintf("reading http://%s%s: %v", req.Domain, path, err))
		case resp.StatusCode != http.StatusOK:
			return server.NewProblem(server.ProbUnauthorized, fmt.Sprintf("http://%s%s answered %d, not 200 (redirects are not followed)", req.Domain, path, resp.StatusCode))
		case len(body) > maxBody:
			return server.NewProblem(server.ProbUnauthorized, fmt.Sprintf("http://%s%s: body longer than %d bytes", req.Domain, path, maxBody))
		}
		if got := string(bytes.TrimRight(body, " \t\r\n")); got != req.KeyAuthorization {
			return server.NewProblem(server.ProbIncorrectResponse, fmt.Sprintf("http://%s%s: the key authorization %q is not the expected one", req.Domain, path, truncate(got)))
		}
		return nil
	}
	return last
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// dns01 is RFC 8555 8.4.
func (v *Validator) dns01(ctx context.Context, req server.ValidationRequest) *server.Problem {
	name := "_acme-challenge." + req.Domain
	want := server.DNS01Value(req.KeyAuthorization)
	var txts []string
	if v.cfg.Resolver == "" {
		got, err := net.DefaultResolver.LookupTXT(ctx, name+".")
		if err != nil {
			return dnsProblem(name, err)
		}
		txts = got
	} else {
		rrs, err := v.query(ctx, name, dns.TypeTXT)
		if err != nil {
			return dnsProblem(name, err)
		}
		for _, rr := range rrs {
			if t, ok := rr.(*dns.TXT); ok {
				txts = append(txts, strings.Join(t.Txt, ""))
			}
		}
	}
	for _, t := range txts {
		if t == want {
			return nil
		}
	}
	if len(txts) == 0 {
		return server.NewProblem(server.ProbDNS, "no TXT record at "+name)
	}
	return server.NewProblem(server.ProbIncorrectResponse, fmt.Sprintf("%d TXT records at %s, none the expected digest", len(txts), name))
}

// oidACMEIdentifier is id-pe-acmeIdentifier (RFC 8737).
var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// tlsALPN01 is RFC 8737.
func (v *Validator) tlsALPN01(ctx context.Context, req server.ValidationRequest) *server.Problem {
	ips, err := v.lookupIP(ctx, req.Domain)
	if err != nil {
		return dnsProblem(req.Domain, err)
	}
	var last *server.Problem
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(v.cfg.TLSALPNPort))
		d := &tls.Dialer{Config: &tls.Config{ServerName: req.Domain, NextProtos: []string{"acme-tls/1"}, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true}} // the certificate is self-signed by design; checked below
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			last = server.NewProblem(server.ProbTLS, fmt.Sprintf("tls-alpn-01 handshake with %s (%s): %v", req.Domain, addr, err))
			continue
		}
		st := conn.(*tls.Conn).ConnectionState()
		_ = conn.Close()
		return checkALPN(st, req)
	}
	return last
}

func checkALPN(st tls.ConnectionState, req server.ValidationRequest) *server.Problem {
	if st.NegotiatedProtocol != "acme-tls/1" {
		return server.NewProblem(server.ProbTLS, fmt.Sprintf("%s did not negotiate acme-tls/1", req.Domain))
	}
	if len(st.PeerCertificates) == 0 {
		return server.NewProblem(server.ProbTLS, "no certificate")
	}
	c := st.PeerCertificates[0]
	if len(c.DNSNames) != 1 || !strings.EqualFold(c.DNSNames[0], req.Domain) || len(c.IPAddresses)+len(c.URIs)+len(c.EmailAddresses) > 0 {
		return server.NewProblem(server.ProbUnauthorized, fmt.Sprintf("tls-alpn-01 certificate names %v, want exactly %s", c.DNSNames, req.Domain))
	}
	want := sha256.Sum256([]byte(req.KeyAuthorization))
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidACMEIdentifier) {
			continue
		}
		var got []byte
		if rest, err := asn1.Unmarshal(e.Value, &got); err != nil || len(rest) > 0 || !e.Critical {
			return server.NewProblem(server.ProbUnauthorized, "tls-alpn-01 acmeIdentifier extension malformed or not critical")
		}
		if !bytes.Equal(got, want[:]) {
			return server.NewProblem(server.ProbIncorrectResponse, "tls-alpn-01 acmeIdentifier does not match the key authorization")
		}
		return nil
	}
	return server.NewProblem(server.ProbUnauthorized, "tls-alpn-01 certificate has no acmeIdentifier extension")
}

var _ server.Validator = (*Validator)(nil)
