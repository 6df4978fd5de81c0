package redisstore

import (
	"context"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/internal/redisconn"
)

// Durability is what Open found about the server's persistence settings.
// See the package documentation.
type Durability struct {
	// Checked is false when the server refused CONFIG GET; the settings
	// below are then empty and Problems says why.
	Checked bool
	// The server's settings of the same names.
	AppendOnly             string
	AppendFsync            string
	NoAppendFsyncOnRewrite string
	MaxmemoryPolicy        string
	// Problems lists, in words, each way acknowledged writes can be lost
	// on this server; empty when none was found.
	Problems []string
}

// Durable reports whether the server was checked and keeps every
// acknowledged write across a crash.
func (d Durability) Durable() bool { return d.Checked && len(d.Problems) == 0 }

// durabilityParams are the settings Open reads, in this order.
var durabilityParams = []string{"appendonly", "appendfsync", "no-appendfsync-on-rewrite", "maxmemory-policy"}

// checkDurability reads the persistence settings. A server error reply
// (CONFIG renamed away or denied by an ACL) gives an unchecked result; a
// transport error is returned.
func checkDurability(ctx context.Context, c *goredis.Client) (Durability, error) {
	vals := make([]string, len(durabilityParams))
	for i, p := range durabilityParams {
		m, err := c.ConfigGet(ctx, p).Result()
		if reply, ok := redisconn.ServerReply(err); ok {
			return Durability{Problems: []string{fmt.Sprintf("the settings cannot be checked: CONFIG GET %s was refused (%s)", p, reply)}}, nil
		}
		if err != nil {
			return Durability{}, err
		}
		vals[i] = strings.ToLower(m[p])
	}
	return judge(vals[0], vals[1], vals[2], vals[3]), nil
}

// judge lists what makes the given settings lose acknowledged writes.
func judge(appendOnly, appendFsync, noFsyncOnRewrite, policy string) Durability {
	d := Durability{
		Checked:                true,
		AppendOnly:             appendOnly,
		AppendFsync:            appendFsync,
		NoAppendFsyncOnRewrite: noFsyncOnRewrite,
		MaxmemoryPolicy:        policy,
	}
	if appendOnly != "yes" {
		d.Problems = append(d.Problems, fmt.Sprintf("appendonly is %q: writes since the last snapshot are lost on a crash and versions restart lower (set appendonly yes)", appendOnly))
	}
	if appendFsync != "always" {
		d.Problems = append(d.Problems, fmt.Sprintf("appendfsync is %q: writes are acknowledged before they reach the disk (set appendfsync always)", appendFsync))
	}
	if noFsyncOnRewrite != "no" {
		d.Problems = append(d.Problems, fmt.Sprintf("no-appendfsync-on-rewrite is %q: writes during a rewrite are acknowledged before they reach the disk (set it to no)", noFsyncOnRewrite))
	}
	if strings.HasPrefix(policy, "allkeys-") {
		d.Problems = append(d.Problems, fmt.Sprintf("maxmemory-policy is %q: entries are evicted at the memory limit (set noeviction or a volatile-* policy)", policy))
	}
	return d
}
