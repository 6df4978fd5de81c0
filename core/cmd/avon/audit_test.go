package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// seedAudit writes n audit events into the embedded store of a fresh
// configuration and returns the configuration path and database file.
func seedAudit(t *testing.T, n int) (cfgPath, dbPath string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("data_dir = %q\n", filepath.Join(dir, "data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(cfgPath)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx := context.Background()
	kv, err := server.OpenStore(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(kv, nil, nil)
	for i := 1; i <= n; i++ {
		if err := l.Emit(ctx, "core", host.Event{Actor: "operator:root", Action: "agent.disable",
			Target: fmt.Sprintf("agent-%d", i), Outcome: "success"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	return cfgPath, cfg.Storage.Path
}

// TestAuditVerifyNamesEditedRow edits one audit row with SQL in the
// database file, as someone with access to the database would, and runs
// the real avon binary's `audit verify`.
func TestAuditVerifyNamesEditedRow(t *testing.T) {
	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	cfgPath, dbPath := seedAudit(t, 12)

	out, err := exec.Command(avon.Path, "audit", "verify", "-config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "audit log OK: 12 records, head 12") {
		t.Fatalf("clean log: %v\n%s", err, out)
	}

	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`UPDATE kv SET value = CAST(replace(CAST(value AS TEXT), '"outcome":"success"', '"outcome":"failure"') AS BLOB) WHERE key = ?`,
		audit.RecordKey(7))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("edited %d rows", n)
	}
	_ = db.Close()

	cmd := exec.Command(avon.Path, "audit", "verify", "-config", cfgPath)
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d (%v), want 1\n%s", code, err, out)
	}
	if !strings.Contains(string(out), "audit log FAILED verification: record 7 altered") {
		t.Fatalf("output does not name record 7:\n%s", out)
	}

	// The JSON report names it too.
	var stdout, stderr bytes.Buffer
	if code := run([]string{"audit", "verify", "-json", "-config", cfgPath}, &stdout, &stderr); code != 1 {
		t.Fatalf("json: exit %d %s", code, stderr.String())
	}
	var rep struct {
		OK       bool            `json:"ok"`
		Problems []audit.Problem `json:"problems"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.OK || len(rep.Problems) != 1 || rep.Problems[0].Seq != 7 {
		t.Fatalf("json report %s (%v)", stdout.String(), err)
	}
}

func TestAuditTailAndExport(t *testing.T) {
	cfgPath, _ := seedAudit(t, 30)
	var out, errb bytes.Buffer
	if code := run([]string{"audit", "tail", "-n", "5", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("tail: %d %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "26 ") || !strings.Contains(lines[4], `target="agent-30"`) {
		t.Fatalf("tail -n 5:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"audit", "export", "-after", "10", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("export: %d %s", code, errb.String())
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 20 {
		t.Fatalf("export after 10 of 30: %d lines", len(lines))
	}
	var r audit.Record
	if err := json.Unmarshal([]byte(lines[0]), &r); err != nil || r.Seq != 11 || len(r.Hash) != 64 {
		t.Fatalf("first exported record %q: %v", lines[0], err)
	}
	errb.Reset()
	if code := run([]string{"audit", "export", "-checkpoint", "-config", cfgPath}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "no checkpoint yet") {
		t.Fatalf("checkpoint export without one: %d %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"audit", "frob"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frob"`) {
		t.Fatalf("unknown audit command: %d %s", code, errb.String())
	}
}

func TestMigrateEmbedded(t *testing.T) {
	cfgPath, _ := seedAudit(t, 1)
	var out, errb bytes.Buffer
	if code := run([]string{"migrate", "-config", cfgPath}, &out, &errb); code != 0 || !strings.Contains(out.String(), "schema is current") {
		t.Fatalf("migrate: %d %q %q", code, out.String(), errb.String())
	}
}

// TestAuditVerifyPostgres edits one audit row in PostgreSQL with SQL and
// runs the real binary's `audit verify`; `avon migrate` runs first.
func TestAuditVerifyPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t, "audit")
	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("data_dir = %q\nstorage \"postgres\" {\n  dsn = env(\"AVON_TEST_PG_DSN\")\n}\n",
		filepath.Join(dir, "data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AVON_TEST_PG_DSN", dsn)

	out, err := exec.Command(avon.Path, "migrate", "-config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "applied 1 migration(s)") || !strings.Contains(string(out), "0001_kv") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	out, err = exec.Command(avon.Path, "migrate", "-config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to apply") {
		t.Fatalf("second migrate: %v\n%s", err, out)
	}
	out, err = exec.Command(avon.Path, "migrate", "-status", "-config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0001_kv") || !strings.Contains(string(out), "applied 20") {
		t.Fatalf("migrate -status: %v\n%s", err, out)
	}

	cfg, diags := config.Load(cfgPath)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx := context.Background()
	kv, err := server.OpenStore(ctx, cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(kv, nil, nil)
	for i := 1; i <= 8; i++ {
		if err := l.Emit(ctx, "core", host.Event{Action: "cert.revoke", Target: fmt.Sprintf("serial-%d", i), Outcome: "success"}); err != nil {
			t.Fatal(err)
		}
	}
	_ = kv.Close()
	out, err = exec.Command(avon.Path, "audit", "verify", "-config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "audit log OK: 8 records") {
		t.Fatalf("clean log: %v\n%s", err, out)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := conn.Exec(ctx, `UPDATE avon_kv SET value = convert_to(replace(convert_from(value, 'UTF8'), 'serial-3', 'serial-9'), 'UTF8') WHERE key = $1`,
		audit.RecordKey(3))
	_ = conn.Close(ctx)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("edit: %v %v", tag, err)
	}
	cmd := exec.Command(avon.Path, "audit", "verify", "-config", cfgPath)
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "audit log FAILED verification: record 3 altered") {
		t.Fatalf("edited row not named (exit %d):\n%s", cmd.ProcessState.ExitCode(), out)
	}
}

// mldsaSigner signs checkpoints with an in-memory ML-DSA-65 key, as the KMS
// would.
type mldsaSigner struct {
	sk  *mldsa65.PrivateKey
	pub audit.PublicKey
}

func newSigner(t *testing.T, id string) *mldsaSigner {
	pk, sk, err := mldsa65.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pk.MarshalBinary()
	return &mldsaSigner{sk: sk, pub: audit.PublicKey{KeyID: id, Algorithm: "ML-DSA-65", PublicKey: b}}
}

func (s *mldsaSigner) Key(context.Context) (audit.PublicKey, error) { return s.pub, nil }
func (s *mldsaSigner) Sign(_ context.Context, msg []byte) ([]byte, audit.PublicKey, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	err := mldsa65.SignTo(s.sk, msg, nil, true, sig)
	return sig, s.pub, err
}

// TestAuditAnchorsDefeatARewrite plays an attacker with full write access
// to the database: the log is rebuilt from record 2 with valid hashes, and
// the checkpoint re-signed with the attacker's own key, stored beside the
// log. Verification against the store alone cannot tell; a pinned key and
// an exported anchor can, and name what changed.
func TestAuditAnchorsDefeatARewrite(t *testing.T) {
	cfgPath, _ := seedAudit(t, 6)
	cfg, _ := config.Load(cfgPath)
	ctx := context.Background()
	openKV := func() store.KV {
		kv, err := server.OpenStore(ctx, cfg, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	kv := openKV()
	owner := newSigner(t, "kms.soft/avon-audit/v1")
	if _, err := audit.NewCheckpointer(audit.New(kv, nil, nil), audit.CheckpointerOptions{Signer: owner}).Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	_ = kv.Close()
	dir := filepath.Dir(cfgPath)
	anchor := filepath.Join(dir, "anchor.json")
	var out, errb bytes.Buffer
	if code := run([]string{"audit", "export", "-checkpoint", "-o", anchor, "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("export: %d %s", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"audit", "verify", "-key", anchor, "-anchor", anchor, "-config", cfgPath}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "1 of 1 checkpoints verified (last at 6) with pinned keys") {
		t.Fatalf("verify with anchor: %d %s %s", code, out.String(), errb.String())
	}

	// The rewrite: every record from 2 on, then the head, then a new
	// checkpoint under the attacker's key replacing the owner's.
	kv = openKV()
	recs, err := audit.List(ctx, kv, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	prev := recs[0].Hash
	for _, r := range recs[1:] {
		r.Prev = prev
		if r.Seq == 2 {
			r.Target = "someone-else"
		}
		r.Hash, _ = audit.ComputeHash(r)
		b, _ := json.Marshal(r)
		if _, err := kv.Put(ctx, audit.RecordKey(r.Seq), b, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		prev = r.Hash
	}
	hb, _ := json.Marshal(map[string]any{"seq": 6, "hash": prev})
	_, _ = kv.Put(ctx, "audit/head", hb, store.PutOptions{})
	_ = kv.Delete(ctx, audit.CheckpointKey(6), store.DeleteOptions{})
	_ = kv.Delete(ctx, "audit/checkpoint-head", store.DeleteOptions{})
	attacker := newSigner(t, "kms.soft/avon-audit/v1")
	if _, err := audit.NewCheckpointer(audit.New(kv, nil, nil), audit.CheckpointerOptions{Signer: attacker}).Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	_ = kv.Close()

	out.Reset()
	if code := run([]string{"audit", "verify", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("the store alone is expected to look consistent after a full rewrite: %s", out.String())
	}
	out.Reset()
	if code := run([]string{"audit", "verify", "-key", anchor, "-config", cfgPath}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "record 6 checkpoint") || !strings.Contains(out.String(), "not trusted") ||
		!strings.Contains(out.String(), "no checkpoint verifies with the pinned keys") {
		t.Fatalf("pinned key: %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"audit", "verify", "-anchor", anchor, "-config", cfgPath}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "record 6 altered") || !strings.Contains(out.String(), "anchored checkpoint") {
		t.Fatalf("anchor: %d\n%s", code, out.String())
	}
}

// TestAuditCommandsChangeNothing: pointed at a data_dir with no store, the
// audit commands fail and create nothing.
func TestAuditCommandsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("data_dir = %q\n", filepath.Join(dir, "typo-data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"audit", "verify"}, {"audit", "tail"}, {"audit", "export"}} {
		var out, errb bytes.Buffer
		if code := run(append(cmd, "-config", cfgPath), &out, &errb); code != 1 || !strings.Contains(errb.String(), "no embedded store at") {
			t.Fatalf("%v: %d %q", cmd, code, errb.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "typo-data")); !os.IsNotExist(err) {
		t.Fatalf("the audit commands created the data dir: %v", err)
	}
}
