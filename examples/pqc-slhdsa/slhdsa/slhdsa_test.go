package slhdsa

import (
	"bytes"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	circl "github.com/cloudflare/circl/sign/slhdsa"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/pqc"
	"github.com/avonzt/avon/sdk/pqc/pqctest"
)

// fakeHost is the smallest host.Host there is: Rand from a reader of the
// test's choice. Every other method is the nil embedded interface's and
// would panic: the plugin needs nothing from the core but randomness.
type fakeHost struct {
	host.Host
	r io.Reader
}

func (h *fakeHost) Rand() io.Reader { return h.r }

// lockedReader makes a deterministic stream safe for concurrent reads, as
// the core's RNG reader is.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// seeded is a deterministic host RNG stream.
func seeded(seed byte) io.Reader { return &lockedReader{r: rand.NewChaCha8([32]byte{seed})} }

// failing is a host RNG that has failed its health tests.
type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, host.ErrRandomUnavailable }

func configured(t testing.TB, cfg string, r io.Reader) *Provider {
	t.Helper()
	p := New()
	if err := p.Configure(context.Background(), &plugin.ConfigureRequest{Config: []byte(cfg), Host: &fakeHost{r: r}}); err != nil {
		t.Fatalf("Configure(%s): %v", cfg, err)
	}
	return p
}

// independent verifies with circl directly, never through the provider.
func independent(alg string, pub, msg, ctx, sig []byte) (bool, error) {
	id, err := circl.IDByName(alg)
	if err != nil {
		return false, err
	}
	pk := circl.PublicKey{ID: id}
	if err := pk.UnmarshalBinary(pub); err != nil {
		return false, err
	}
	return circl.Verify(&pk, circl.NewMessage(msg), sig, ctx), nil
}

// slow says whether a parameter set is left out of this run. The "s" sets
// sign in 0.3-1.3 s each, SHAKE is 2-3 times slower than SHA2, and the race
// detector slows circl 4-20 times: -short keeps the "f" sets, -race the
// five fastest sets (races do not depend on the parameter set); a plain
// run covers all twelve.
func slow(name string) bool {
	switch {
	case testing.Short():
		return strings.HasSuffix(name, "s")
	case raceEnabled:
		return !slices.Contains([]string{"SLH-DSA-SHA2-128s", "SLH-DSA-SHA2-128f", "SLH-DSA-SHA2-192f", "SLH-DSA-SHA2-256f", "SLH-DSA-SHAKE-128f"}, name)
	}
	return false
}

func TestConformance(t *testing.T) {
	var only []string
	for _, s := range sets {
		if !slow(s.name()) {
			only = append(only, s.name())
		}
	}
	if len(only) < len(sets) {
		t.Logf("-short or -race: per-algorithm conformance on %d of %d parameter sets (the listing of all twelve is checked)", len(only), len(sets))
	}
	pqctest.Run(t, func(t *testing.T) pqc.Provider { return configured(t, `{}`, seeded(1)) },
		pqctest.WithIndependentVerifier(independent), pqctest.WithAlgorithms(only...))
}

// The restricted and the deterministic configurations pass the kit too.
func TestConformanceDeterministicRestricted(t *testing.T) {
	pqctest.Run(t, func(t *testing.T) pqc.Provider {
		return configured(t, `{"algorithms":["2.16.840.1.101.3.4.3.21","SLH-DSA-SHAKE-128f"],"deterministic":true}`, seeded(2))
	}, pqctest.WithIndependentVerifier(independent))
}

func TestListing(t *testing.T) {
	want := []struct{ name, oid string }{
		{"SLH-DSA-SHA2-128s", "2.16.840.1.101.3.4.3.20"}, {"SLH-DSA-SHA2-128f", "2.16.840.1.101.3.4.3.21"},
		{"SLH-DSA-SHA2-192s", "2.16.840.1.101.3.4.3.22"}, {"SLH-DSA-SHA2-192f", "2.16.840.1.101.3.4.3.23"},
		{"SLH-DSA-SHA2-256s", "2.16.840.1.101.3.4.3.24"}, {"SLH-DSA-SHA2-256f", "2.16.840.1.101.3.4.3.25"},
		{"SLH-DSA-SHAKE-128s", "2.16.840.1.101.3.4.3.26"}, {"SLH-DSA-SHAKE-128f", "2.16.840.1.101.3.4.3.27"},
		{"SLH-DSA-SHAKE-192s", "2.16.840.1.101.3.4.3.28"}, {"SLH-DSA-SHAKE-192f", "2.16.840.1.101.3.4.3.29"},
		{"SLH-DSA-SHAKE-256s", "2.16.840.1.101.3.4.3.30"}, {"SLH-DSA-SHAKE-256f", "2.16.840.1.101.3.4.3.31"},
	}
	// FIPS 205 Table 2: n and signature sizes.
	sigSize := map[string]int{"128s": 7856, "128f": 17088, "192s": 16224, "192f": 35664, "256s": 29792, "256f": 49856}
	r, err := configured(t, `{}`, seeded(1)).ListAlgorithms(context.Background(), &pqc.ListAlgorithmsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Algorithms) != len(want) {
		t.Fatalf("%d algorithms listed, want %d", len(r.Algorithms), len(want))
	}
	for i, a := range r.Algorithms {
		level := a.Name[len(a.Name)-4:]
		n := map[string]int{"128": 16, "192": 24, "256": 32}[level[:3]]
		if a.Name != want[i].name || a.OID != want[i].oid || a.Type != pqc.TypeSignature ||
			a.PublicKeySize != 2*n || a.PrivateKeySize != 4*n || a.SignatureSize != sigSize[level] {
			t.Errorf("entry %d: %+v, want %s %s with n=%d, signature %d", i, a, want[i].name, want[i].oid, n, sigSize[level])
		}
	}
}

// Every operation takes the name or the OID alike.
func TestNameOrOID(t *testing.T) {
	ctx := context.Background()
	p := configured(t, `{}`, seeded(3))
	k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "2.16.840.1.101.3.4.3.27"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHAKE-128f", PrivateKey: k.PrivateKey, Message: []byte("m")})
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: "2.16.840.1.101.3.4.3.27", PublicKey: k.PublicKey, Message: []byte("m"), Signature: s.Signature})
	if err != nil || !v.Valid {
		t.Fatalf("verify by OID: %v %v", v, err)
	}
	// The OID of another set with keys of the same size: not valid there.
	v, err = p.Verify(ctx, &pqc.VerifyRequest{Algorithm: "2.16.840.1.101.3.4.3.21", PublicKey: k.PublicKey, Message: []byte("m"), Signature: s.Signature})
	if err != nil || v.Valid {
		t.Fatalf("a SHAKE-128f signature checked as SHA2-128f: %v %v", v, err)
	}
	for _, bad := range []string{"slh-dsa-shake-128f", "2.16.840.1.101.3.4.3.32", "2.16.840.1.101.3.4.3.17", " SLH-DSA-SHAKE-128f"} {
		if _, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: bad}); !errors.Is(err, pqc.ErrUnknownAlgorithm) {
			t.Errorf("GenerateKey(%q): want ErrUnknownAlgorithm, got %v", bad, err)
		}
	}
}

// Randomness comes from the host: the same host stream gives the same keys
// and the same hedged signatures, another stream different ones.
func TestRandomnessFromHost(t *testing.T) {
	ctx := context.Background()
	const alg = "SLH-DSA-SHA2-128f"
	run := func(seed byte) (pub, sig []byte) {
		p := configured(t, `{}`, seeded(seed))
		k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		return k.PublicKey, s.Signature
	}
	pub1, sig1 := run(7)
	pub2, sig2 := run(7)
	if !bytes.Equal(pub1, pub2) || !bytes.Equal(sig1, sig2) {
		t.Fatal("the same host RNG stream gave different keys or signatures: randomness does not come (only) from the host")
	}
	pub3, sig3 := run(8)
	if bytes.Equal(pub1, pub3) || bytes.Equal(sig1, sig3) {
		t.Fatal("different host RNG streams gave the same key or signature")
	}
}

// Without host randomness nothing is made, and the error says why.
func TestHostRNGFailure(t *testing.T) {
	ctx := context.Background()
	const alg = "SLH-DSA-SHA2-128f"
	k, _ := configured(t, `{}`, seeded(1)).GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
	for name, r := range map[string]io.Reader{"failing": failing{}, "short": bytes.NewReader(make([]byte, 20))} {
		p := configured(t, `{}`, r)
		if g, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg}); !errors.Is(err, host.ErrRandomUnavailable) || g != nil {
			t.Errorf("%s RNG: GenerateKey: want ErrRandomUnavailable, got %v", name, err)
		}
		if s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: []byte("m")}); !errors.Is(err, host.ErrRandomUnavailable) || s != nil {
			t.Errorf("%s RNG: hedged Sign: want ErrRandomUnavailable, got %v", name, err)
		}
	}
	// Deterministic signing draws nothing, so it works without an RNG.
	p := configured(t, `{"deterministic":true}`, failing{})
	if _, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: []byte("m")}); err != nil {
		t.Fatalf("deterministic Sign with a failed RNG: %v", err)
	}
}

func TestDeterministicMode(t *testing.T) {
	ctx := context.Background()
	const alg = "SLH-DSA-SHA2-128f"
	det, hedged := configured(t, `{"deterministic":true}`, seeded(1)), configured(t, `{}`, seeded(1))
	k, _ := det.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
	sign := func(p *Provider) []byte {
		s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: []byte("m"), Context: []byte("c")})
		if err != nil {
			t.Fatal(err)
		}
		return s.Signature
	}
	if !bytes.Equal(sign(det), sign(det)) {
		t.Error("deterministic mode gave two different signatures")
	}
	if bytes.Equal(sign(hedged), sign(hedged)) {
		t.Error("hedged mode gave the same signature twice")
	}
}

// Known answers from NIST ACVP (FIPS 205, external interface, pure mode),
// through the provider: keys from host randomness skSeed||skPrf||pkSeed,
// hedged signatures from host randomness opt_rand, exactly as FIPS 205
// draws them, and nothing more is read.
func TestACVP(t *testing.T) {
	f, err := os.Open("testdata/acvp.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		KeyGen []struct {
			TcID                          int
			ParameterSet                  string
			SkSeed, SkPrf, PkSeed, Sk, Pk hexBytes
		}
		SigGen []struct {
			TcID                                       int
			ParameterSet                               string
			Deterministic                              bool
			Sk, Message, Context, AdditionalRandomness hexBytes
			SignatureSHA256                            hexBytes
		}
		Verify []struct {
			TcID                            int
			ParameterSet                    string
			Pk, Message, Context, Signature hexBytes
			TestPassed                      bool
		}
	}
	if err := json.NewDecoder(z).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if len(v.KeyGen) == 0 || len(v.SigGen) == 0 || len(v.Verify) == 0 {
		t.Fatal("testdata/acvp.json.gz holds no vectors")
	}
	ctx := context.Background()
	t.Run("KeyGen", func(t *testing.T) {
		for _, c := range v.KeyGen {
			if slow(c.ParameterSet) {
				continue
			}
			seeds := bytes.NewReader(bytes.Join([][]byte{c.SkSeed, c.SkPrf, c.PkSeed}, nil))
			k, err := configured(t, `{}`, seeds).GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: c.ParameterSet})
			if err != nil {
				t.Fatalf("tcId %d: %v", c.TcID, err)
			}
			if !bytes.Equal(k.PublicKey, c.Pk) || !bytes.Equal(k.PrivateKey, c.Sk) || seeds.Len() != 0 {
				t.Errorf("tcId %d (%s): key differs from the known answer (or %d seed bytes unread)", c.TcID, c.ParameterSet, seeds.Len())
			}
		}
	})
	t.Run("SigGen", func(t *testing.T) {
		for _, c := range v.SigGen {
			if slow(c.ParameterSet) {
				continue
			}
			mode := "hedged"
			if c.Deterministic {
				mode = "deterministic"
			}
			t.Run(c.ParameterSet+"/"+mode, func(t *testing.T) {
				t.Parallel()
				var p *Provider
				optRand := bytes.NewReader(c.AdditionalRandomness)
				if c.Deterministic {
					p = configured(t, `{"deterministic":true}`, failing{})
				} else {
					p = configured(t, `{}`, optRand)
				}
				s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: c.ParameterSet, PrivateKey: c.Sk, Message: c.Message, Context: c.Context})
				if err != nil {
					t.Fatalf("tcId %d: %v", c.TcID, err)
				}
				if sum := sha256.Sum256(s.Signature); !bytes.Equal(sum[:], c.SignatureSHA256) || optRand.Len() != 0 {
					t.Errorf("tcId %d (%s, deterministic %v): signature differs from the known answer (or %d random bytes unread)",
						c.TcID, c.ParameterSet, c.Deterministic, optRand.Len())
				}
			})
		}
	})
	t.Run("Verify", func(t *testing.T) {
		p := configured(t, `{}`, failing{})
		for _, c := range v.Verify {
			r, err := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: c.ParameterSet, PublicKey: c.Pk, Message: c.Message, Context: c.Context, Signature: c.Signature})
			if err != nil || r.Valid != c.TestPassed {
				t.Errorf("tcId %d (%s): Valid=%v err=%v, want %v", c.TcID, c.ParameterSet, r != nil && r.Valid, err, c.TestPassed)
			}
		}
	})
}

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	*h = d
	return err
}

// Interoperability both ways with circl used directly: the provider's
// signatures verify under circl.Verify, circl's verify under the provider.
func TestIndependentVerification(t *testing.T) {
	ctx := context.Background()
	p := configured(t, `{}`, seeded(4))
	msg, c := []byte("interop"), []byte("avon")
	for _, s := range sets {
		if slow(s.name()) || (strings.HasSuffix(s.name(), "s") && s.id != circl.SHA2_128s) {
			continue // the "s" sets are covered by the conformance run
		}
		t.Run(s.name(), func(t *testing.T) {
			t.Parallel()
			k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: s.name()})
			if err != nil {
				t.Fatal(err)
			}
			sig, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: s.name(), PrivateKey: k.PrivateKey, Message: msg, Context: c})
			if err != nil {
				t.Fatal(err)
			}
			pub := circl.PublicKey{ID: s.id}
			if err := pub.UnmarshalBinary(k.PublicKey); err != nil {
				t.Fatal(err)
			}
			if !circl.Verify(&pub, circl.NewMessage(msg), sig.Signature, c) {
				t.Error("circl rejects the provider's signature")
			}
			if circl.Verify(&pub, circl.NewMessage(msg), sig.Signature, nil) {
				t.Error("circl accepts the provider's signature under another context")
			}

			cpub, cpriv, err := circl.GenerateKey(crand.Reader, s.id)
			if err != nil {
				t.Fatal(err)
			}
			csig, err := circl.SignRandomized(&cpriv, crand.Reader, circl.NewMessage(msg), c)
			if err != nil {
				t.Fatal(err)
			}
			pb, _ := cpub.MarshalBinary()
			v, err := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: s.oid, PublicKey: pb, Message: msg, Context: c, Signature: csig})
			if err != nil || !v.Valid {
				t.Errorf("the provider rejects circl's signature: %v %v", v, err)
			}
		})
	}
}

func TestNotConfigured(t *testing.T) {
	ctx := context.Background()
	p := New()
	_, e1 := p.ListAlgorithms(ctx, &pqc.ListAlgorithmsRequest{})
	_, e2 := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"})
	_, e3 := p.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHA2-128f", PrivateKey: make([]byte, 64), Message: []byte("m")})
	_, e4 := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: "SLH-DSA-SHA2-128f", PublicKey: make([]byte, 32), Message: []byte("m")})
	for i, err := range []error{e1, e2, e3, e4} {
		if !errors.Is(err, errdef.ErrNotConfigured) {
			t.Errorf("call %d before Configure: want ErrNotConfigured, got %v", i+1, err)
		}
	}
}

func TestConfigure(t *testing.T) {
	ctx := context.Background()
	names := func(p *Provider) []string {
		t.Helper()
		r, err := p.ListAlgorithms(ctx, &pqc.ListAlgorithmsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range r.Algorithms {
			out = append(out, a.Name)
		}
		return out
	}
	p := configured(t, `{"algorithms":["SLH-DSA-SHAKE-256f","2.16.840.1.101.3.4.3.20","SLH-DSA-SHA2-128s"]}`, seeded(1))
	if got := strings.Join(names(p), " "); got != "SLH-DSA-SHA2-128s SLH-DSA-SHAKE-256f" {
		t.Fatalf("restricted by name and OID (duplicates merged, listing order kept): %s", got)
	}
	if _, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"}); !errors.Is(err, pqc.ErrUnknownAlgorithm) {
		t.Fatalf("a set not offered: want ErrUnknownAlgorithm, got %v", err)
	}

	for cfg, attr := range map[string]string{
		`{"algorithms":["SLH-DSA-MD5"]}`: "algorithms",
		`{"algorithms":[]}`:              "algorithms",
		`{"algorithm":["x"]}`:            "",
		`{"deterministic":"yes"}`:        "",
		`not json`:                       "",
	} {
		err := p.Configure(ctx, &plugin.ConfigureRequest{Config: []byte(cfg), Host: &fakeHost{r: seeded(1)}})
		var pe *plugin.ProblemsError
		if !errors.As(err, &pe) || len(pe.Problems) == 0 || pe.Problems[0].Attribute != attr {
			t.Errorf("Configure(%s): want a problem on %q, got %v", cfg, attr, err)
		}
		if ps := p.ValidateConfig(ctx, []byte(cfg)); len(ps) == 0 {
			t.Errorf("ValidateConfig(%s) finds no problem", cfg)
		}
	}
	// Every failed Configure left the previous configuration in force.
	if got := len(names(p)); got != 2 {
		t.Fatalf("after failed reconfigurations %d sets offered, want the previous 2", got)
	}
	if err := p.Configure(ctx, &plugin.ConfigureRequest{Config: []byte(`{}`)}); !errors.Is(err, errdef.ErrInvalidArgument) {
		t.Fatalf("Configure without host services: %v", err)
	}
	// A reload that succeeds applies whole.
	if err := p.Configure(ctx, &plugin.ConfigureRequest{Config: []byte(`{}`), Host: &fakeHost{r: seeded(1)}}); err != nil || len(names(p)) != 12 {
		t.Fatalf("reload to defaults: %v, %d sets", err, len(names(p)))
	}
}

// The schema is what the core decodes the operator's HCL against; the JSON
// it produces must unmarshal into Config and configure the provider.
func TestSchemaWithHCL(t *testing.T) {
	s := New().ConfigSchema()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarshalJSON(); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]int{
		``: 12,
		`algorithms = ["SLH-DSA-SHA2-128s", "2.16.840.1.101.3.4.3.21"]
deterministic = true`: 2,
	} {
		f, diags := hclsyntax.ParseConfig([]byte(src), "config.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		raw, diags := config.Decode(f.Body, s, nil)
		if diags.HasErrors() {
			t.Fatalf("decode %q: %v", src, diags)
		}
		p := configured(t, string(raw), seeded(1))
		r, err := p.ListAlgorithms(context.Background(), &pqc.ListAlgorithmsRequest{})
		if err != nil || len(r.Algorithms) != want {
			t.Errorf("%q: %d sets offered (%v), want %d", src, len(r.Algorithms), err, want)
		}
	}
	f, _ := hclsyntax.ParseConfig([]byte(`algoritms = ["SLH-DSA-SHA2-128s"]`), "config.hcl", hcl.InitialPos)
	if _, diags := config.Decode(f.Body, s, nil); !diags.HasErrors() {
		t.Error("a misspelt attribute decodes without a diagnostic")
	}
}

// A private key whose public half was altered is refused, not used: the
// signature is checked under the key's own public half before it leaves.
func TestAlteredPrivateKey(t *testing.T) {
	ctx := context.Background()
	const alg = "SLH-DSA-SHA2-128f"
	p := configured(t, `{}`, seeded(1))
	k, _ := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
	for _, i := range []int{40, len(k.PrivateKey) - 1} { // PK.seed, PK.root
		bad := bytes.Clone(k.PrivateKey)
		bad[i] ^= 1
		if _, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: bad, Message: []byte("m")}); !errors.Is(err, pqc.ErrInvalidKey) {
			t.Errorf("private key altered at byte %d: want ErrInvalidKey, got %v", i, err)
		}
	}
}

// wipe reaches circl's copy of the secret key parts; if circl renames its
// fields this fails rather than silently wiping nothing.
func TestWipeClearsCirclKey(t *testing.T) {
	_, priv, err := circl.GenerateKey(seeded(1), circl.SHA2_128f)
	if err != nil {
		t.Fatal(err)
	}
	wipe(&priv)
	b, _ := priv.MarshalBinary()
	if !bytes.Equal(b[:32], make([]byte, 32)) {
		t.Fatal("SK.seed and SK.prf are still in circl's key after wipe")
	}
	if bytes.Equal(b[32:], make([]byte, 32)) {
		t.Fatal("wipe cleared the public half too")
	}
}

func TestInfo(t *testing.T) {
	i := New().Info()
	if i.Name != "pqc-slhdsa" || i.Version != Version || !strings.HasPrefix(i.Metadata["library"], "github.com/cloudflare/circl/sign/slhdsa") {
		t.Fatalf("%+v", i)
	}
}

// Verify never panics and never errs on a well-sized key, whatever the
// message, context and signature bytes.
func FuzzVerify(f *testing.F) {
	p := configured(f, `{}`, seeded(1))
	ctx := context.Background()
	k, _ := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"})
	s, _ := p.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHA2-128f", PrivateKey: k.PrivateKey, Message: []byte("m")})
	f.Add(uint8(2), k.PublicKey, []byte("m"), []byte{}, s.Signature)
	f.Add(uint8(0), k.PublicKey, []byte{}, []byte{1}, []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, set uint8, pub, msg, c, sig []byte) {
		alg := sets[int(set)%len(sets)]
		r, err := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: alg.name(), PublicKey: pub, Message: msg, Context: c, Signature: sig})
		badKey, badCtx := len(pub) != alg.id.Scheme().PublicKeySize(), len(c) > pqc.MaxContextSize
		switch {
		case badKey || badCtx:
			if !(badKey && errors.Is(err, pqc.ErrInvalidKey)) && !(badCtx && errors.Is(err, errdef.ErrInvalidArgument)) {
				t.Fatalf("public key of %d bytes, context of %d bytes: %v", len(pub), len(c), err)
			}
		case err != nil:
			t.Fatal(err)
		case r.Valid && !bytes.Equal(sig, s.Signature):
			t.Fatal("a fuzzed signature verifies")
		}
	})
}

// Benchmarks: the provider (hedged, with the check after signing) and, for
// comparison, circl called directly.
func BenchmarkSign(b *testing.B) {
	ctx := context.Background()
	p := configured(b, `{}`, crand.Reader)
	msg := make([]byte, 256)
	for _, alg := range []string{"SLH-DSA-SHA2-128s", "SLH-DSA-SHA2-128f"} {
		k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(alg+"/provider", func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: msg}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(alg+"/circl", func(b *testing.B) {
			id, _ := circl.IDByName(alg)
			priv := circl.PrivateKey{ID: id}
			_ = priv.UnmarshalBinary(k.PrivateKey)
			for b.Loop() {
				if _, err := circl.SignRandomized(&priv, crand.Reader, circl.NewMessage(msg), nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	p := configured(b, `{}`, crand.Reader)
	msg := make([]byte, 256)
	for _, alg := range []string{"SLH-DSA-SHA2-128s", "SLH-DSA-SHA2-128f"} {
		k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
		if err != nil {
			b.Fatal(err)
		}
		s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: msg})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(alg+"/provider", func(b *testing.B) {
			for b.Loop() {
				if r, err := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: alg, PublicKey: k.PublicKey, Message: msg, Signature: s.Signature}); err != nil || !r.Valid {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(alg+"/circl", func(b *testing.B) {
			id, _ := circl.IDByName(alg)
			pub := circl.PublicKey{ID: id}
			_ = pub.UnmarshalBinary(k.PublicKey)
			for b.Loop() {
				if !circl.Verify(&pub, circl.NewMessage(msg), s.Signature, nil) {
					b.Fatal("invalid")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
