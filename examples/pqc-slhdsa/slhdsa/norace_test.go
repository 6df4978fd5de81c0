//go:build !race

package slhdsa

const raceEnabled = false
