package pulse_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// keyByte fills the tracker key in tests: the key is 32 bytes of it.
const keyByte = 0x5a

func newTracker(t testing.TB, cfg pulse.Config) *pulse.Tracker {
	t.Helper()
	tr, err := pulse.New(cfg, bytes.NewReader(bytes.Repeat([]byte{keyByte}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

func sid(n int) pulse.ID {
	var id pulse.ID
	id[0] = 0xa5
	binary.BigEndian.PutUint64(id[8:], uint64(n))
	return id
}

func info(n int, agent, serial string) pulse.SessionInfo {
	return pulse.SessionInfo{ID: sid(n), AgentID: agent, CertSerial: serial, Established: t0}
}

func add(t testing.TB, tr *pulse.Tracker, in pulse.SessionInfo) pulse.Token {
	t.Helper()
	tok, err := tr.Add(in)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func beatMsg(seq uint64, tok pulse.Token, at time.Time) *control.Pulse {
	return &control.Pulse{
		Seq: seq, SessionToken: tok, AgentTime: at.UnixNano(), ClockOffset: int64(3 * time.Millisecond),
		OS: "linux", AgentVersion: "1.0.0", Facts: map[string]string{"disk.encrypted": "true", "seq": fmt.Sprint(seq)},
	}
}

// refToken computes a token from the package documentation, independently of
// the implementation: secret = HMAC(key, "avon-v1 pulse secret" || id),
// token = HMAC(secret, "avon-v1 pulse token" || seq).
func refToken(id pulse.ID, seq uint64) (t pulse.Token) {
	m := hmac.New(sha256.New, bytes.Repeat([]byte{keyByte}, 32))
	m.Write([]byte("avon-v1 pulse secret"))
	m.Write(id[:])
	secret := m.Sum(nil)
	m = hmac.New(sha256.New, secret)
	m.Write([]byte("avon-v1 pulse token"))
	m.Write(binary.BigEndian.AppendUint64(nil, seq))
	copy(t[:], m.Sum(nil))
	return t
}
