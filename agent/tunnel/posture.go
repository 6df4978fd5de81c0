package tunnel

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/avonzt/avon/core/tunnel/control"
)

// osName is runtime.GOOS and, where /etc/os-release names the
// distribution, its PRETTY_NAME: "linux; Debian GNU/Linux 13 (trixie)".
func osName() string {
	s := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		if p := PrettyName(b); p != "" {
			s += "; " + p
		}
	}
	return truncate(s, control.MaxOS)
}

// PrettyName returns the PRETTY_NAME value of an os-release file (shell
// quoting removed), or "" when there is none. It reads at most 64 KiB and
// 1024 lines.
func PrettyName(b []byte) string {
	if len(b) > 64<<10 {
		b = b[:64<<10]
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 0; n < 1024 && sc.Scan(); n++ {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || k != "PRETTY_NAME" {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		v = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || r == utf8.RuneError {
				return -1
			}
			return r
		}, v)
		return strings.TrimSpace(v)
	}
	return ""
}

// truncate cuts s to at most n bytes at a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
