package abac

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/policy"
)

// Decision log: what the plugin sends through host.Audit.
const (
	// DecisionAction is the audit action of a logged decision.
	DecisionAction = "policy.decision"
	// Masked replaces the value of a context key that names a secret.
	Masked = "(masked)"
	// maxLoggedContext bounds the context copied into one event.
	maxLoggedContext = 2048
)

// ShouldLog says whether a decision goes to the decision log: every denial
// and every report-only would-be denial, and allowed decisions with
// probability rate; u is a uniform random number in [0, 1) the caller
// draws.
func ShouldLog(d policy.Decision, rate, u float64) bool {
	return !d.Allow || d.ReportOnly || len(d.Errors) > 0 || u < rate
}

// DecisionEvent is the audit event for one decision of set at version.
// Context keys that name secrets (token, secret, password, credential, ...)
// have their values replaced by Masked at any depth; the context is cut
// at 2 KiB.
func DecisionEvent(set string, version uint64, q policy.Query, d policy.Decision) host.Event {
	outcome := "success"
	if !d.Allow {
		outcome = "denied"
	}
	f := map[string]string{
		"policy_set": set,
		"version":    strconv.FormatUint(version, 10),
		"action":     entityString(q.Action),
		"resource":   entityString(q.Resource),
		"allow":      strconv.FormatBool(d.Allow),
		"context":    MaskContext(q.Context),
	}
	if d.ReportOnly {
		f["report_only"] = "true"
		f["would_deny"] = "true"
	}
	if len(d.DeterminingPolicies) > 0 {
		f["policies"] = strings.Join(d.DeterminingPolicies, ",")
	}
	if len(d.Errors) > 0 {
		f["errors"] = truncate(strings.Join(d.Errors, "; "), maxLoggedContext)
	}
	return host.Event{
		Action:  DecisionAction,
		Target:  entityString(q.Resource),
		Actor:   entityString(q.Principal),
		Outcome: outcome,
		Reason:  truncate(strings.Join(d.Reasons, "; "), maxLoggedContext),
		Fields:  f,
	}
}

func entityString(r policy.EntityRef) string { return r.Type + "::" + strconv.Quote(r.ID) }

// secretWords mark a key whose value must never be logged.
var secretWords = []string{"token", "secret", "passw", "passphrase", "credential", "authorization", "cookie",
	"private", "apikey", "api_key", "api-key", "bearer", "session_key", "signature"}

// IsSecretKey says whether a context key names a secret.
func IsSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// MaskContext returns a context JSON for logging: secret-named keys masked
// at any depth, at most 2 KiB. Text that is not JSON is not copied.
func MaskContext(raw []byte) string {
	if len(raw) == 0 {
		return "{}"
	}
	n, err := parseJSON(raw)
	if err != nil {
		return "(not JSON, " + strconv.Itoa(len(raw)) + " bytes)"
	}
	var b bytes.Buffer
	writeMasked(&b, n)
	return truncate(b.String(), maxLoggedContext)
}

func writeMasked(b *bytes.Buffer, n node) {
	switch n.kind {
	case 's':
		s, _ := json.Marshal(n.str)
		b.Write(s)
	case 'n':
		b.WriteString(n.str)
	case 'b':
		b.WriteString(strconv.FormatBool(n.b))
	case 'z':
		b.WriteString("null")
	case 'a':
		b.WriteByte('[')
		for i, e := range n.arr {
			if i > 0 {
				b.WriteByte(',')
			}
			writeMasked(b, e)
		}
		b.WriteByte(']')
	case 'o':
		b.WriteByte('{')
		for i, m := range n.obj {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(m.key)
			b.Write(k)
			b.WriteByte(':')
			if IsSecretKey(m.key) {
				b.WriteString(strconv.Quote(Masked))
				continue
			}
			writeMasked(b, m.val)
		}
		b.WriteByte('}')
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "...(truncated)"
}
