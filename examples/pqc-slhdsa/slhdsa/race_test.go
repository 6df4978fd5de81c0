//go:build race

package slhdsa

// raceEnabled: the race detector slows circl's hashing some 5-20x, so the
// slowest parameter sets are left to runs without it.
const raceEnabled = true
