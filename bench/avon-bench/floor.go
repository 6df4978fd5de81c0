package main

import (
	crand "crypto/rand"
	"fmt"
	"runtime"

	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"golang.org/x/sys/unix"

	"github.com/avonzt/avon/core/handshake"
)

// floorCPU measures the gateway's primitive floor per handshake in this
// process, on one locked thread, n times: one X-Wing encapsulation (key
// unpack included), one hedged ML-DSA-65 signature with the gateway's
// signer, and two ML-DSA-65 verifications, as the responder does them: the
// leaf's signature with its issuer's key parsed once and cached
// (handshake.ChainVerifier), and sig_i with the leaf's key, parsed for
// every handshake. It returns the thread's CPU microseconds per iteration,
// so the handshake's CPU can be compared with it under the same machine
// load.
//
// The thread's CPU time advances at scheduler ticks and context switches
// (Linux tick CPU accounting; 4 ms ticks at HZ=250), so the figure is
// good to about one tick over the whole run: ±4 % with the default 300
// iterations of about 300 µs.
//
// Parsing an ML-DSA-65 public key expands its matrix A (FIPS 204 ExpandA,
// 30 polynomials sampled with SHAKE128) and costs several verifications'
// worth (BenchmarkFloorParts); the floor counts it once, since the
// responder does it once (the leaf's key). Counting it for both
// verifications overstated the floor by one parse.
func floorCPU(signer handshake.Signer, n int) (float64, error) {
	_, epk, err := xwing.GenerateKeyPair(crand.Reader)
	if err != nil {
		return 0, err
	}
	epkb, err := epk.MarshalBinary()
	if err != nil {
		return 0, err
	}
	vpk, vsk, err := mldsa65.GenerateKey(crand.Reader)
	if err != nil {
		return 0, err
	}
	vpkb, _ := vpk.MarshalBinary()
	msg := make([]byte, 32)
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(vsk, msg, nil, false, sig); err != nil {
		return 0, err
	}
	ct := make([]byte, xwing.CiphertextSize)
	ss := make([]byte, xwing.SharedKeySize)
	seed := make([]byte, xwing.EncapsulationSeedSize)
	once := func() error {
		var pk xwing.PublicKey
		if err := pk.Unpack(epkb); err != nil {
			return err
		}
		if _, err := crand.Read(seed); err != nil {
			return err
		}
		pk.EncapsulateTo(ct, ss, seed)
		if _, err := signer.Sign(msg, []byte("avon-v1 responder")); err != nil {
			return err
		}
		// The leaf's signature, with the issuer's cached key.
		if !mldsa65.Verify(vpk, msg, nil, sig) {
			return fmt.Errorf("floor: signature does not verify")
		}
		// sig_i, with the leaf's key parsed for this handshake.
		var k mldsa65.PublicKey
		if err := k.UnmarshalBinary(vpkb); err != nil {
			return err
		}
		if !mldsa65.Verify(&k, msg, nil, sig) {
			return fmt.Errorf("floor: signature does not verify")
		}
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Untimed warm-up, so that first-use costs (heap growth, caches) stay
	// out of the figure. The floor measured before the handshakes still
	// reads 10-40 % above the one measured after them on the loaded
	// development VM, with or without it; the report gives both and their
	// mean.
	for range max(n/4, 10) {
		if err := once(); err != nil {
			return 0, err
		}
	}
	var before, after unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &before); err != nil {
		return 0, err
	}
	for range n {
		if err := once(); err != nil {
			return 0, err
		}
	}
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &after); err != nil {
		return 0, err
	}
	us := func(r unix.Rusage) float64 {
		return float64(r.Utime.Sec+r.Stime.Sec)*1e6 + float64(r.Utime.Usec+r.Stime.Usec)
	}
	return (us(after) - us(before)) / float64(n), nil
}
