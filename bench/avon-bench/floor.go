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
// signer, and two ML-DSA-65 verifications with the key parsed each time
// (the leaf's signature by its issuer and sig_i by the leaf). It returns
// the thread's CPU microseconds per iteration, so the handshake's CPU can
// be compared with it under the same machine load.
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
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &before); err != nil {
		return 0, err
	}
	ct := make([]byte, xwing.CiphertextSize)
	ss := make([]byte, xwing.SharedKeySize)
	seed := make([]byte, xwing.EncapsulationSeedSize)
	for range n {
		var pk xwing.PublicKey
		if err := pk.Unpack(epkb); err != nil {
			return 0, err
		}
		if _, err := crand.Read(seed); err != nil {
			return 0, err
		}
		pk.EncapsulateTo(ct, ss, seed)
		if _, err := signer.Sign(msg, []byte("avon-v1 responder")); err != nil {
			return 0, err
		}
		for range 2 {
			var k mldsa65.PublicKey
			if err := k.UnmarshalBinary(vpkb); err != nil {
				return 0, err
			}
			if !mldsa65.Verify(&k, msg, nil, sig) {
				return 0, fmt.Errorf("floor: signature does not verify")
			}
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
