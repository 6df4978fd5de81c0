package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Every namespace New creates has an owner record, /run/avon-netns/<name>,
// holding "<pid> <start time>" of the test binary that made it. A record
// whose process is gone (or whose pid now belongs to a process started at
// another time) marks a leftover: sweep kills what runs in it and deletes it.

// self is this process's owner line, computed once.
var self = sync.OnceValues(func() (string, error) {
	pid := os.Getpid()
	start, err := processStart(pid)
	if err != nil {
		return "", err
	}
	return ownerLine(pid, start), nil
})

func ownerLine(pid int, start uint64) string {
	return strconv.Itoa(pid) + " " + strconv.FormatUint(start, 10) + "\n"
}

func writeOwner(name string) error {
	line, err := self()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("netns: owner record: %w", err)
	}
	if err := os.WriteFile(filepath.Join(ownerDir, name), []byte(line), 0o644); err != nil {
		return fmt.Errorf("netns: owner record: %w", err)
	}
	return nil
}

// parseOwner reads an owner record: a decimal pid, one space, a decimal
// start time, an optional newline.
func parseOwner(b []byte) (pid int, start uint64, err error) {
	if len(b) == 0 || len(b) > maxOwnerLen {
		return 0, 0, fmt.Errorf("%w: owner record of %d bytes", ErrInvalid, len(b))
	}
	s := strings.TrimSuffix(string(b), "\n")
	p, st, ok := strings.Cut(s, " ")
	if !ok {
		return 0, 0, fmt.Errorf("%w: owner record %q", ErrInvalid, s)
	}
	pid, err = strconv.Atoi(p)
	if err != nil || pid <= 0 || p[0] == '+' {
		return 0, 0, fmt.Errorf("%w: owner pid %q", ErrInvalid, p)
	}
	start, err = strconv.ParseUint(st, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: owner start time %q", ErrInvalid, st)
	}
	return pid, start, nil
}

// processStart returns field 22 of /proc/<pid>/stat: the process's start
// time in clock ticks since boot.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("netns: %w", err)
	}
	return parseStatStart(b)
}

// parseStatStart extracts the start time from the text of /proc/<pid>/stat.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStatStart(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: no command name in stat", ErrInvalid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("%w: stat has %d fields after the command name", ErrInvalid, len(fields))
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: stat start time %q", ErrInvalid, fields[19])
	}
	return start, nil
}

// alive reports whether the process that wrote an owner record still runs.
func alive(pid int, start uint64) bool {
	got, err := processStart(pid)
	return err == nil && got == start
}

// sweep deletes the namespaces whose owner died without cleaning up. Errors
// are ignored: another test binary may be sweeping the same leftovers.
func sweep() {
	entries, err := os.ReadDir(ownerDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, Prefix) || checkName(name) != nil {
			continue
		}
		rec := filepath.Join(ownerDir, name)
		b, err := readSmall(rec, maxOwnerLen)
		if err != nil {
			continue
		}
		pid, start, err := parseOwner(b)
		if err == nil && alive(pid, start) {
			continue
		}
		ns := &NS{name: name}
		if _, err := os.Stat(ns.Path()); err == nil {
			_ = killAll(ns.Path())
			_, _ = ip("netns", "del", name)
		}
		_ = os.Remove(rec)
	}
}

// checkName accepts the names New makes: Prefix, 6 hex digits, '-', a label.
func checkName(name string) error {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok || len(rest) < 8 || rest[6] != '-' {
		return fmt.Errorf("%w: namespace name %q", ErrInvalid, name)
	}
	for _, c := range []byte(rest[:6]) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: namespace name %q", ErrInvalid, name)
		}
	}
	return checkLabel(rest[7:])
}

func readSmall(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, limit+1)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return nil, err
	}
	if n > limit {
		return nil, errors.New("record too long")
	}
	return b[:n], nil
}
