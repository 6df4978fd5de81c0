package pqctest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/pqc"
	"github.com/avonzt/avon/sdk/pqc/pqcrpc"
	"github.com/avonzt/avon/sdk/pqc/pqctest"
)

// ref is a small reference provider over circl (ML-DSA-44, ML-KEM-768) that
// follows the contract; bug, when set, breaks one rule so the tests can show
// the suite notices.
type ref struct {
	bug string

	mu  sync.Mutex // guards rnd
	rnd io.Reader
}

const (
	mldsa = "ML-DSA-44"
	mlkem = "ML-KEM-768"
)

func newRef(bug string) *ref {
	return &ref{bug: bug, rnd: rand.NewChaCha8([32]byte{1})}
}

func (r *ref) read(n int) []byte {
	b := make([]byte, n)
	if r.bug == "fixed-rand" {
		return b
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = io.ReadFull(r.rnd, b)
	return b
}

func (r *ref) algs() []pqc.Algorithm {
	sig := pqc.Algorithm{Name: mldsa, OID: "2.16.840.1.101.3.4.3.17", Type: pqc.TypeSignature,
		PublicKeySize: mldsa44.PublicKeySize, PrivateKeySize: mldsa44.PrivateKeySize, SignatureSize: mldsa44.SignatureSize}
	kem := pqc.Algorithm{Name: mlkem, OID: "2.16.840.1.101.3.4.4.2", Type: pqc.TypeKEM,
		PublicKeySize: mlkem768.PublicKeySize, PrivateKeySize: mlkem768.PrivateKeySize,
		CiphertextSize: mlkem768.CiphertextSize, SharedSecretSize: mlkem768.SharedKeySize}
	switch r.bug {
	case "wrong-size":
		sig.SignatureSize++
	case "dup-oid":
		kem.OID = sig.OID
	case "bad-oid":
		sig.OID = "2.16.840.1.101.3.4.3.017"
	case "bad-type":
		kem.Type = "cipher"
	}
	return []pqc.Algorithm{sig, kem}
}

func (r *ref) check(alg string, want pqc.Type) error {
	for _, a := range r.algs() {
		if a.Name == alg {
			if a.Type != want {
				if r.bug == "wrong-type-ignored" {
					return nil
				}
				return fmt.Errorf("%s is a %s algorithm: %w", alg, a.Type, pqc.ErrWrongType)
			}
			return nil
		}
	}
	if r.bug == "unknown-as-invalid-key" {
		return fmt.Errorf("algorithm %q: %w", alg, pqc.ErrInvalidKey)
	}
	return fmt.Errorf("algorithm %q: %w", alg, pqc.ErrUnknownAlgorithm)
}

func (r *ref) sizes(msg, c []byte) error {
	if len(c) > pqc.MaxContextSize && r.bug != "long-context" {
		return fmt.Errorf("context of %d bytes: %w", len(c), errdef.ErrInvalidArgument)
	}
	if len(msg) > pqc.MaxMessageSize {
		return fmt.Errorf("message of %d bytes: %w", len(msg), errdef.ErrInvalidArgument)
	}
	return nil
}

func (r *ref) ListAlgorithms(context.Context, *pqc.ListAlgorithmsRequest) (*pqc.ListAlgorithmsResponse, error) {
	return &pqc.ListAlgorithmsResponse{Algorithms: r.algs()}, nil
}

func (r *ref) GenerateKey(_ context.Context, req *pqc.GenerateKeyRequest) (*pqc.GenerateKeyResponse, error) {
	switch req.Algorithm {
	case mldsa:
		var seed [mldsa44.SeedSize]byte
		copy(seed[:], r.read(len(seed)))
		pk, sk := mldsa44.NewKeyFromSeed(&seed)
		return &pqc.GenerateKeyResponse{PublicKey: pk.Bytes(), PrivateKey: sk.Bytes()}, nil
	case mlkem:
		pk, sk := mlkem768.Scheme().DeriveKeyPair(r.read(mlkem768.KeySeedSize))
		pb, _ := pk.MarshalBinary()
		sb, _ := sk.MarshalBinary()
		return &pqc.GenerateKeyResponse{PublicKey: pb, PrivateKey: sb}, nil
	}
	return nil, r.check(req.Algorithm, "")
}

func (r *ref) Sign(_ context.Context, req *pqc.SignRequest) (*pqc.SignResponse, error) {
	if err := r.check(req.Algorithm, pqc.TypeSignature); err != nil {
		return nil, err
	}
	if err := r.sizes(req.Message, req.Context); err != nil {
		return nil, err
	}
	var sk mldsa44.PrivateKey
	if err := sk.UnmarshalBinary(req.PrivateKey); err != nil {
		return nil, fmt.Errorf("private key: %v: %w", err, pqc.ErrInvalidKey)
	}
	c := req.Context
	if r.bug == "ignore-context" {
		c = nil
	}
	sig := make([]byte, mldsa44.SignatureSize)
	if err := mldsa44.SignTo(&sk, req.Message, c, false, sig); err != nil {
		return nil, err // circl's own error: wraps no sentinel
	}
	if r.bug == "mutates-input" && len(req.Message) > 0 {
		req.Message[0] ^= 1
	}
	return &pqc.SignResponse{Signature: sig}, nil
}

func (r *ref) Verify(_ context.Context, req *pqc.VerifyRequest) (*pqc.VerifyResponse, error) {
	if err := r.check(req.Algorithm, pqc.TypeSignature); err != nil {
		return nil, err
	}
	if err := r.sizes(req.Message, req.Context); err != nil {
		return nil, err
	}
	var pk mldsa44.PublicKey
	if err := pk.UnmarshalBinary(req.PublicKey); err != nil {
		if r.bug == "plain-key-error" {
			return nil, errors.New("bad public key")
		}
		return nil, fmt.Errorf("public key: %v: %w", err, pqc.ErrInvalidKey)
	}
	c := req.Context
	if r.bug == "ignore-context" {
		c = nil
	}
	ok := mldsa44.Verify(&pk, req.Message, c, req.Signature)
	if !ok && r.bug == "verify-errors" {
		return nil, fmt.Errorf("bad signature: %w", errdef.ErrInvalidArgument)
	}
	return &pqc.VerifyResponse{Valid: ok}, nil
}

func (r *ref) Encapsulate(_ context.Context, req *pqc.EncapsulateRequest) (*pqc.EncapsulateResponse, error) {
	if err := r.check(req.Algorithm, pqc.TypeKEM); err != nil {
		return nil, err
	}
	pk, err := mlkem768.Scheme().UnmarshalBinaryPublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %v: %w", err, pqc.ErrInvalidKey)
	}
	ct, ss, err := mlkem768.Scheme().EncapsulateDeterministically(pk, r.read(mlkem768.EncapsulationSeedSize))
	if err != nil {
		return nil, err
	}
	return &pqc.EncapsulateResponse{Ciphertext: ct, SharedSecret: ss}, nil
}

func (r *ref) Decapsulate(_ context.Context, req *pqc.DecapsulateRequest) (*pqc.DecapsulateResponse, error) {
	if err := r.check(req.Algorithm, pqc.TypeKEM); err != nil {
		return nil, err
	}
	sk, err := mlkem768.Scheme().UnmarshalBinaryPrivateKey(req.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("private key: %v: %w", err, pqc.ErrInvalidKey)
	}
	if len(req.Ciphertext) != mlkem768.CiphertextSize {
		if r.bug == "ciphertext-as-key" {
			return nil, fmt.Errorf("ciphertext: %w", pqc.ErrInvalidKey)
		}
		return nil, fmt.Errorf("ciphertext of %d bytes: %w", len(req.Ciphertext), pqc.ErrInvalidCiphertext)
	}
	ss, err := mlkem768.Scheme().Decapsulate(sk, req.Ciphertext)
	if err != nil {
		return nil, err
	}
	return &pqc.DecapsulateResponse{SharedSecret: ss}, nil
}

// sigOnly hides the KEM capability (and the KEM algorithm from the list).
type sigOnly struct{ *ref }

func (s sigOnly) ListAlgorithms(context.Context, *pqc.ListAlgorithmsRequest) (*pqc.ListAlgorithmsResponse, error) {
	return &pqc.ListAlgorithmsResponse{Algorithms: s.algs()[:1]}, nil
}

// kemless lists the KEM but lacks the capability.
type kemless struct{ pqc.Provider }

func mldsaVerifier(alg string, pub, msg, ctx, sig []byte) (bool, error) {
	if alg != mldsa {
		return false, fmt.Errorf("%s: %w", alg, errdef.ErrNotImplemented)
	}
	var pk mldsa44.PublicKey
	if err := pk.UnmarshalBinary(pub); err != nil {
		return false, err
	}
	return mldsa44.Verify(&pk, msg, ctx, sig), nil
}

var (
	_ pqc.Provider = (*ref)(nil)
	_ pqc.KEM      = (*ref)(nil)
)

func TestReferenceProvider(t *testing.T) {
	pqctest.Run(t, func(*testing.T) pqc.Provider { return newRef("") }, pqctest.WithIndependentVerifier(mldsaVerifier))
}

func TestSignatureOnlyProvider(t *testing.T) {
	pqctest.Run(t, func(*testing.T) pqc.Provider { return sigOnly{newRef("")} })
}

// serve serves impl over the pqc gRPC shim on an in-memory connection,
// with the message limits the plugin transport uses.
func serve(t *testing.T, impl pqc.Provider) pqc.Provider {
	t.Helper()
	const limit = 64 << 20
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(grpc.MaxRecvMsgSize(limit), grpc.MaxSendMsgSize(limit))
	pqcrpc.Register(s, impl)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit), grpc.MaxCallSendMsgSize(limit)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return pqcrpc.NewClient(cc)
}

// Through the gRPC shim: nil and empty byte strings merge on the wire,
// errors must keep their identity, and a signature-only provider is seen
// through a client that always has the KEM methods.
func TestThroughGRPC(t *testing.T) {
	t.Run("WithKEM", func(t *testing.T) {
		pqctest.Run(t, func(t *testing.T) pqc.Provider { return serve(t, newRef("")) },
			pqctest.WithIndependentVerifier(mldsaVerifier))
	})
	t.Run("SignatureOnly", func(t *testing.T) {
		pqctest.Run(t, func(t *testing.T) pqc.Provider { return serve(t, sigOnly{newRef("")}) })
	})
}

// The suite has teeth: each broken provider fails it, with a message that
// names the broken rule. Each runs in a child test process (a failing
// *testing.T cannot be contained in this one).
func TestCatchesBrokenProviders(t *testing.T) {
	for bug, want := range map[string]string{
		"verify-errors":          "not an error",
		"long-context":           "want ErrInvalidArgument",
		"plain-key-error":        "want ErrInvalidKey",
		"wrong-size":             "listed 2421",
		"dup-oid":                "listed twice",
		"bad-oid":                "leading zeros",
		"bad-type":               "is neither",
		"unknown-as-invalid-key": "want ErrUnknownAlgorithm",
		"wrong-type-ignored":     "want ErrWrongType",
		"ignore-context":         "tampered (context bit) signature verifies",
		"fixed-rand":             "returned the same key",
		"mutates-input":          "Sign modified its input",
		"ciphertext-as-key":      "want ErrInvalidCiphertext",
		"kemless":                "does not implement pqc.KEM",
		"bad-verifier":           "independent verifier says false",
	} {
		t.Run(bug, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenProvider$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "PQCTEST_BUG="+bug)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("the suite passed a provider with bug %q (err %v):\n%s", bug, err, out)
			}
			if !bytes.Contains(out, []byte(want)) {
				t.Fatalf("the suite failed without saying %q:\n%s", want, out)
			}
		})
	}
}

// TestBrokenProvider is the child of TestCatchesBrokenProviders.
func TestBrokenProvider(t *testing.T) {
	bug := os.Getenv("PQCTEST_BUG")
	if bug == "" {
		t.Skip("run by TestCatchesBrokenProviders")
	}
	var opts []pqctest.Option
	var p pqc.Provider = newRef(bug)
	switch bug {
	case "kemless":
		p = kemless{p}
	case "bad-verifier":
		opts = append(opts, pqctest.WithIndependentVerifier(func(string, []byte, []byte, []byte, []byte) (bool, error) { return false, nil }))
	}
	pqctest.Run(t, func(*testing.T) pqc.Provider { return p }, opts...)
}
