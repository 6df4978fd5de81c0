// Package rng is the core's random number generator: every key generation
// and nonce in the core, and in plugins through the host RNG service, draws
// from a Generator. It is an SP 800-90A Rev.1 CTR_DRBG with AES-256 seeded
// from the operating system, with SP 800-90B health tests on the raw
// entropy and fail-closed behaviour. It must not fall back to any other
// generator, and it never hands out bytes once a health test has failed.
//
// # Layers
//
// CTRDRBG is the deterministic mechanism of §10.2.1 (Instantiate, Reseed,
// Generate with additional input, reseed_counter against reseed_interval,
// at most 2^19 bits per request), with the block cipher derivation function
// (Block_Cipher_df and BCC, §10.3.2–10.3.3) or without it (entropy input of
// exactly seedlen = 48 bytes, personalization and additional input of at
// most 48 bytes, zero-padded and XORed in). It takes all inputs as
// arguments, so the NIST ACVP known answers drive it directly.
//
// Generator wraps several independent CTRDRBG instances ("shards") with
// entropy sources, the reseed policy and the failure state. It is an
// io.Reader safe for concurrent use.
//
// # Entropy and its assessment
//
// The primary source is the operating system (getrandom, through
// crypto/rand); it is the only source credited with entropy. Every byte it
// returns is a sample for the health tests. The kernel's output is itself
// conditioned, so it would justify 8 bits per byte; the package credits
// H = 4 bits of min-entropy per byte (DefaultMinEntropy) instead. The
// derating costs little (a few dozen extra bytes per seed) and sets the
// cutoffs where a working source practically never trips them: for a
// source of exactly H = 4 the false-positive rate is alpha = 2^-20 per
// test as SP 800-90B requires, while the real kernel output passes a
// repetition count of 6 identical bytes with probability about 2^-40 per
// sample, and the adaptive proportion cutoff of 62 in 512 is out of reach.
// A false alarm matters: the generator fails closed.
//
// Seed sizes follow from H: with the derivation function, an entropy input
// of ceil(256/H) = 64 samples (security strength 256) and a nonce of
// ceil(128/H) = 32 samples from the same source (SP 800-90A §8.6.7).
// Without it, ceil((384+64)/H) = 112 samples are conditioned by
// Block_Cipher_df (a vetted conditioning component, SP 800-90B §3.1.5.1)
// down to 48 bytes; the 64-bit margin is what lets that output count as
// full entropy, which the no-df mode requires.
//
// Extra sources (WithExtraSource: a KMS plugin's hardware generator, an
// HSM's C_GenerateRandom) are health-tested the same way, with their own
// assessment (MinEntropySource) or DefaultMinEntropy, and each contributes
// ExtraSourceBytes appended to the entropy input of every instantiate and
// reseed (before conditioning in the no-df mode). They are not credited:
// the amount drawn from the OS alone meets the security strength, so an
// extra source can only add unpredictability, never be required. An extra
// source that errors or returns too few bytes is left out of that seed and
// reported in Health; one that fails a health test is excluded until
// Reinstantiate. Neither affects the generator's state. Source.Read must be
// bounded in time by its implementer (adapters over plugins set a
// deadline), since it runs while one shard is locked.
//
// # Health tests
//
// SP 800-90B §4.4 on byte samples, alpha = 2^-20: the Repetition Count
// Test with cutoff C = 1 + ceil(20/H) (6 for H = 4) and the Adaptive
// Proportion Test over windows of 512 samples with cutoff
// 1 + CRITBINOM(512, 2^-H, 1-alpha) (62 for H = 4), computed from the
// binomial distribution by RCTCutoff and APTCutoff. Test state is per
// source and continuous across draws. Before a source's output is first
// used, StartupSamples = 1024 samples pass through both tests and are
// discarded (in New and again in Reinstantiate).
//
// # Reseed policy
//
// A shard reseeds from fresh entropy before an internal Generate when any
// of these holds: its reseed counter passed Config.ReseedRequests
// (reseed_interval, at most 2^48); the request would take it past
// Config.ReseedBytes since its last (re)seed; Config.ReseedInterval has
// elapsed on the injected clock (monotonic with time.Now); or prediction
// resistance is on, in which case every Generate is preceded by a reseed
// (as SP 800-90A §9.3.1 does for a prediction-resistance request). Reseed
// reseeds every shard on demand with optional additional input. Time and
// bytes are checked at each internal Generate, so up to one buffer of
// output generated before a deadline may be handed out after it.
//
// # Speed and the output buffer
//
// Read must be as cheap as crypto/rand for 32-byte nonces. Three things
// make it so without leaving SP 800-90A. Shards: N = GOMAXPROCS
// independent instances, each instantiated from its own entropy, so
// concurrent readers rarely share a lock; a per-P hint keeps a goroutine on
// the shard it used last. Key schedule: the expanded AES key is kept from
// one Update to the next and rebuilt only when Update changes Key (once per
// Generate); the previous schedule is overwritten. Buffer: reads smaller
// than Config.BufferSize (at most 4 KiB per shard) are served from output
// of one larger Generate call, and each byte is zeroed as it is handed out.
//
// The buffer weakens backtracking resistance in a bounded way: bytes
// generated but not yet handed out sit in memory, so someone who captures
// the process state learns up to BufferSize bytes per shard that later
// readers will receive (earlier outputs are gone: zeroed, and the DRBG
// state has moved on through Update). Reads of BufferSize or more, and all
// reads with prediction resistance (where the buffer is disabled), go
// straight to Generate. A reseed drops the buffer.
//
// # Failure semantics
//
// Any health test failure of the primary source, any error of the primary
// source during a reseed (whether triggered by the counter, time, bytes or
// prediction resistance), or a DRBG error puts the generator in the failed
// state. From then on Read returns 0 and a *FailedError, with p zeroed:
// errors.Is(err, ErrFailed) always, errors.Is(err, ErrHealth) and
// errors.As(err, **HealthError) (source, test name) when a health test was
// the cause. The function set by WithOnFailure is called once, outside the
// generator's locks, so the server can audit the event and mark /readyz
// not ready. Every shard's state is wiped (at once if its lock is free,
// else on its next use). The state is sticky: a source that recovers does
// not bring the generator back. Only Reinstantiate (new start-up tests,
// fresh instantiation of every shard) or a process restart does; if the
// start-up tests fail again, the generator stays failed. New returns the
// start-up failure of the primary source as an error.
//
// # Zeroization
//
// Close and CTRDRBG.Uninstantiate overwrite Key, V, the expanded AES key
// schedule and the output buffers; Read then returns ErrClosed. Seed
// material, derivation-function intermediates and CTR keystream objects
// are overwritten after use. Copies the Go runtime makes on goroutine
// stacks cannot be reached and are not covered.
package rng
