//go:build !linux

package main

import (
	"flag"
	"fmt"
	"io"
)

func stateFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "state", defaultStateDir, "the agent's state directory")
	fs.StringVar(p, "state-dir", defaultStateDir, "alias of -state")
}

func cmdUp(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "avon-agent up: this build supports the tunnel on Linux only")
	return 1
}

func cmdDown(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "avon-agent down: this build supports the tunnel on Linux only")
	return 1
}

func running(string) (int, bool) { return 0, false }
