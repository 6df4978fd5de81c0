package netcfg

import (
	"os"
	"strconv"
	"strings"
)

// capNetAdmin is CAP_NET_ADMIN's bit number.
const capNetAdmin = 12

// CanAdminister reports whether this process may change links, addresses
// and routes: it runs as root or holds CAP_NET_ADMIN in its effective set
// (read from /proc/self/status; false when that cannot be read).
func CanAdminister() bool {
	if os.Geteuid() == 0 {
		return true
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capNetAdmin) != 0
		}
	}
	return false
}
