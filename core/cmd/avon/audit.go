package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/core/store"
)

const auditUsage = `Usage: avon audit <command> [flags]

Commands:
  query    records filtered by time, action, actor, target, outcome (over the running core's admin socket)
           avon audit query -config config.hcl [-since 2026-12-01T00:00:00Z] [-until ...] [-action cert.*] [-actor ...] [-n 100] [-o json]
  verify   walk the hash chain and the signed checkpoints; exit 1 naming the
           first altered, missing or inserted record
           avon audit verify -config config.hcl [-key key.json]... [-anchor checkpoint.json]... [-json]
           (reads the store itself, so it works with the core stopped; -via-core asks the running core)
  tail     print the newest records (and follow with -f)
           avon audit tail -config config.hcl [-n 20] [-f] [-json]
  export   write records as JSON lines, or the newest signed checkpoint
           avon audit export -config config.hcl [-after SEQ] [-checkpoint] [-o FILE]
`

// fileList is a repeatable flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func cmdAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	switch args[0] {
	case "verify":
		return cmdAuditVerify(args[1:], stdout, stderr)
	case "query":
		return cmdAuditQuery(args[1:], stdout, stderr)
	case "tail":
		return cmdAuditTail(args[1:], stdout, stderr)
	case "export":
		return cmdAuditExport(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, auditUsage)
		return 0
	}
	fmt.Fprintf(stderr, "avon audit: unknown command %q\n\n%s", args[0], auditUsage)
	return 2
}

// openConfiguredStore loads the configuration and opens its store.
func openConfiguredStore(ctx context.Context, path string, stderr io.Writer) (store.KV, *config.Config, bool) {
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if cfg != nil {
			files = cfg.Files
		}
		_ = config.WriteDiagnostics(stderr, files, diags)
		return nil, nil, false
	}
	kv, err := server.OpenStoreToInspect(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		fmt.Fprintf(stderr, "avon: %v\n", err)
		return nil, nil, false
	}
	return kv, cfg, true
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

// loadKey reads a pinned key: a key document ({"key_id","algorithm",
// "public_key"}) or a checkpoint export (its key is taken).
func loadKey(path string) (audit.PublicKey, error) {
	var doc struct {
		audit.PublicKey
		Key *audit.PublicKey `json:"key"`
	}
	if err := readJSONFile(path, &doc); err != nil {
		return audit.PublicKey{}, err
	}
	k := doc.PublicKey
	if doc.Key != nil {
		k = *doc.Key
	}
	if k.Algorithm == "" || len(k.PublicKey) == 0 {
		return audit.PublicKey{}, fmt.Errorf("%s: no algorithm and public_key", path)
	}
	return k, nil
}

func cmdAuditVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	allowEmpty := fs.Bool("allow-empty", false, "accept a log without records")
	viaCore := fs.Bool("via-core", false, "ask the running core to verify its log (over the admin socket) instead of reading the store here")
	maxUnsigned := fs.Int64("max-unsigned", -1, "records allowed after the newest verified checkpoint (default: the configuration's checkpoint_every when -key is given, else no limit)")
	var keys, anchors fileList
	fs.Var(&keys, "key", "trusted checkpoint key (key JSON or a checkpoint export); repeatable")
	fs.Var(&anchors, "anchor", "checkpoint export kept outside AVON that the log must still match; repeatable")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	if *viaCore {
		if len(keys) > 0 || len(anchors) > 0 {
			fmt.Fprintln(stderr, "avon audit verify: -key and -anchor check the store here, not -via-core")
			return 2
		}
		return cmdAuditVerifyRemote(*path, *asJSON, stdout, stderr)
	}
	var opts audit.VerifyOptions
	for _, p := range keys {
		k, err := loadKey(p)
		if err != nil {
			fmt.Fprintln(stderr, "avon audit verify: key:", err)
			return 2
		}
		opts.TrustedKeys = append(opts.TrustedKeys, k)
	}
	for _, p := range anchors {
		b, err := os.ReadFile(p)
		if err == nil {
			var e audit.Export
			e, err = audit.ParseExport(b)
			opts.Anchors = append(opts.Anchors, e)
		}
		if err != nil {
			fmt.Fprintf(stderr, "avon audit verify: anchor %s: %v\n", p, err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	kv, cfg, ok := openConfiguredStore(ctx, *path, stderr)
	if !ok {
		return 1
	}
	defer kv.Close()
	opts.AllowEmpty = *allowEmpty
	switch {
	case *maxUnsigned >= 0:
		opts.MaxUnsigned = uint64(*maxUnsigned)
	case len(opts.TrustedKeys) > 0 && cfg.Audit.Checkpoints:
		opts.MaxUnsigned = uint64(cfg.Audit.CheckpointEvery)
	}
	rep, err := audit.Verify(ctx, kv, opts)
	if err != nil {
		fmt.Fprintln(stderr, "avon audit verify:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			OK bool `json:"ok"`
			*audit.Report
		}{rep.OK(), rep})
	} else {
		trust := "keys from the store (pin them with -key)"
		if rep.KeysPinned {
			trust = "pinned keys"
		}
		if rep.OK() {
			fmt.Fprintf(stdout, "audit log OK: %d records, head %d, %d of %d checkpoints verified (last at %d) with %s\n",
				rep.Records, rep.Head, rep.CheckpointsVerified, rep.Checkpoints, rep.LastCheckpoint, trust)
			if rep.Unsigned > 0 {
				fmt.Fprintf(stdout, "%d records after the last verified checkpoint are protected by the hash chain only\n", rep.Unsigned)
			}
			if len(opts.Anchors) == 0 {
				fmt.Fprintln(stdout, "without -anchor, a log rewritten together with its checkpoints and keys cannot be told apart; keep exported checkpoints outside AVON")
			}
		} else {
			first, _ := rep.First()
			fmt.Fprintf(stdout, "audit log FAILED verification: %s\n", first)
			fmt.Fprintf(stdout, "%d problems (%d records, head %d, %d of %d checkpoints verified with %s):\n",
				len(rep.Problems), rep.Records, rep.Head, rep.CheckpointsVerified, rep.Checkpoints, trust)
			for _, p := range rep.Problems {
				fmt.Fprintf(stdout, "  %s\n", p)
			}
			if rep.Truncated {
				fmt.Fprintln(stdout, "  ... (more problems not listed)")
			}
		}
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

func printRecord(w io.Writer, r audit.Record, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	parts := []string{fmt.Sprintf("%6d", r.Seq), r.Time.Format(time.RFC3339Nano), r.Source}
	for _, kv := range [][2]string{{"actor", r.Actor}, {"action", r.Action}, {"target", r.Target},
		{"outcome", r.Outcome}, {"reason", r.Reason}, {"request", r.RequestID}} {
		if kv[1] != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", kv[0], kv[1]))
		}
	}
	fmt.Fprintln(w, strings.Join(parts, " "))
}

func cmdAuditTail(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	n := fs.Int("n", 20, "how many records")
	follow := fs.Bool("f", false, "keep printing new records until interrupted")
	asJSON := fs.Bool("json", false, "print records as JSON lines")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *n < 0 || *n > store.MaxLimit {
		if *n < 0 || *n > store.MaxLimit {
			fmt.Fprintf(stderr, "avon audit tail: -n must be 0 to %d\n", store.MaxLimit)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kv, _, ok := openConfiguredStore(ctx, *path, stderr)
	if !ok {
		return 1
	}
	defer kv.Close()
	l := audit.New(kv, nil, nil)
	head, _, err := l.Head(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "avon audit tail:", err)
		return 1
	}
	after := uint64(0)
	if head > uint64(*n) {
		after = head - uint64(*n)
	}
	for {
		recs, err := l.List(ctx, after, store.MaxLimit)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			fmt.Fprintln(stderr, "avon audit tail:", err)
			return 1
		}
		for _, r := range recs {
			printRecord(stdout, r, *asJSON)
			after = r.Seq
		}
		if !*follow {
			return 0
		}
		if len(recs) == store.MaxLimit {
			continue
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(time.Second):
		}
	}
}

func cmdAuditExport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	after := fs.Uint64("after", 0, "export records after this seq")
	checkpoint := fs.Bool("checkpoint", false, "write the newest signed checkpoint and its key instead of records")
	out := fs.String("o", "-", "output file (- for stdout)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kv, _, ok := openConfiguredStore(ctx, *path, stderr)
	if !ok {
		return 1
	}
	defer kv.Close()
	w := stdout
	if *out != "-" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			fmt.Fprintln(stderr, "avon audit export:", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	if *checkpoint {
		e, err := audit.ExportLatest(ctx, kv)
		if errors.Is(err, store.ErrNotFound) {
			fmt.Fprintln(stderr, "avon audit export: no checkpoint yet (the core signs one every checkpoint_every events or checkpoint_interval)")
			return 1
		}
		if err != nil {
			fmt.Fprintln(stderr, "avon audit export:", err)
			return 1
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(e); err != nil {
			fmt.Fprintln(stderr, "avon audit export:", err)
			return 1
		}
		return 0
	}
	n := 0
	for {
		recs, err := audit.List(ctx, kv, *after, store.MaxLimit)
		if err != nil {
			fmt.Fprintln(stderr, "avon audit export:", err)
			return 1
		}
		for _, r := range recs {
			printRecord(w, r, true)
			*after = r.Seq
			n++
		}
		if len(recs) < store.MaxLimit {
			break
		}
	}
	if *out != "-" {
		fmt.Fprintf(stderr, "avon audit export: %d records written to %s\n", n, *out)
	}
	return 0
}
