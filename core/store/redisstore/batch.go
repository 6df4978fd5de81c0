package redisstore

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/core/store"
)

// Modes of a batch op in batchScript: a put as in putScript ("p" any, "c"
// create, "u" at version); a delete as in deleteScript, renamed so that
// every mode says whether it puts ("d" any, "a" must be absent, "r" at
// version).
func batchMode(op store.Op) string {
	switch {
	case op.Delete && !op.Check:
		return "d"
	case op.Delete && op.Version == 0:
		return "a"
	case op.Delete:
		return "r"
	case !op.Check:
		return "p"
	case op.Version == 0:
		return "c"
	}
	return "u"
}

// batchScript: KEYS counter, index, then the entry of each op; ARGV four
// per op: mode (see batchMode), expected version, value (empty for a
// delete), key. It checks the index and every op (type of its entry, then
// its condition, as putScript and deleteScript do) before the first
// write, answering {0, index, current version or nil} for the first
// failed check. Then it draws the batch's versions with one INCRBY (which
// fails whole, writing nothing, on a corrupt or exhausted counter), hands
// them out in op order as exact decimal text, and writes each op as the
// single-op scripts do: HSET and ZADD for a put, DEL and ZREM for a
// delete ("a" writes nothing). It answers {1, version or "" per op}.
var batchScript = goredis.NewScript(`
local ti = redis.call('TYPE', KEYS[2]).ok
if ti ~= 'zset' and ti ~= 'none' then
  return redis.error_reply('` + corruptKey + ` index key holds a ' .. ti)
end
local n = #KEYS - 2
local puts = 0
for i = 1, n do
  local t = redis.call('TYPE', KEYS[i+2]).ok
  if t ~= 'hash' and t ~= 'none' then
    return redis.error_reply('` + corruptKey + ` entry key holds a ' .. t)
  end
  local mode = ARGV[4*i-3]
  if mode == 'p' or mode == 'c' or mode == 'u' then puts = puts + 1 end
  if mode ~= 'p' and mode ~= 'd' then
    local cur = false
    if t == 'hash' then cur = redis.call('HGET', KEYS[i+2], 'v') or '' end
    if mode == 'c' or mode == 'a' then
      if cur then return {0, i-1, cur} end
    elseif cur ~= ARGV[4*i-2] then
      return {0, i-1, cur}
    end
  end
end
local vs = {}
if puts > 0 then
  local c = redis.pcall('GET', KEYS[1])
  if type(c) == 'table' and c.err then
    return redis.error_reply('` + corruptKey + ` version counter: ' .. c.err)
  end
  if c and string.sub(c, 1, 1) == '-' then
    return redis.error_reply('` + corruptKey + ` version counter is negative')
  end
  local r = redis.pcall('INCRBY', KEYS[1], puts)
  if type(r) == 'table' and r.err then
    return redis.error_reply('` + corruptKey + ` version counter: ' .. r.err)
  end
  local v = redis.call('GET', KEYS[1])
  local left = puts
  for i = n, 1, -1 do
    local mode = ARGV[4*i-3]
    if mode == 'p' or mode == 'c' or mode == 'u' then
      vs[i] = v
      left = left - 1
      if left > 0 then
        -- v - 1 in decimal text: v is a positive integer above left.
        local j = #v
        while string.byte(v, j) == 48 do j = j - 1 end
        v = string.sub(v, 1, j-1) .. string.char(string.byte(v, j) - 1) .. string.rep('9', #v - j)
        if #v > 1 and string.byte(v, 1) == 48 then v = string.sub(v, 2) end
      end
    end
  end
end
local out = {1}
for i = 1, n do
  local mode = ARGV[4*i-3]
  if vs[i] then
    redis.call('HSET', KEYS[i+2], 'v', vs[i], 'd', ARGV[4*i-1])
    redis.call('ZADD', KEYS[2], 0, ARGV[4*i])
  elseif mode ~= 'a' then
    redis.call('DEL', KEYS[i+2])
    redis.call('ZREM', KEYS[2], ARGV[4*i])
  end
  out[i+1] = vs[i] or ''
end
return out
`)

// Apply implements store.Batcher: one script (batchScript), so the batch
// is atomic on the server and its checks hold across replicas. Like Put,
// it is never retried by the client.
func (s *Store) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	if err := store.CheckBatch(ops); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("apply of %d ops", len(ops))
	if err := s.ready(ctx, name); err != nil {
		return nil, err
	}
	keys := make([]string, 2, 2+len(ops))
	keys[0], keys[1] = s.counterKey, s.indexKey
	args := make([]any, 0, 4*len(ops))
	for _, op := range ops {
		keys = append(keys, s.entryKey(op.Key))
		value := op.Value
		if value == nil || op.Delete {
			value = []byte{}
		}
		args = append(args, batchMode(op), formatVersion(op.Version), value, op.Key)
	}
	reply, err := batchScript.Run(ctx, s.client, keys, args...).Result()
	if err != nil {
		return nil, s.fail(ctx, name, err, true)
	}
	r, err := decodeBatch(reply, ops)
	if err != nil {
		return nil, s.fail(ctx, name, err, false)
	}
	if r.ok {
		return r.versions, nil
	}
	op := ops[r.index]
	verb := "put"
	if op.Delete {
		verb = "delete"
	}
	return nil, &store.BatchError{Index: r.index, Key: op.Key,
		Err: conflict(fmt.Sprintf("%s %q", verb, op.Key), op.Version, writeResult{exists: r.exists, current: r.current})}
}

var _ store.Batcher = (*Store)(nil)
