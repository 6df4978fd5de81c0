package ntp_test

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration/ntp"
)

// behaviour is what the test server does with a request.
type behaviour struct {
	offset      time.Duration // served time minus the real clock
	stratum     uint8         // 0 with kiss set; default 2
	leap        uint8
	kiss        string // kiss-of-death code; forces stratum 0
	mode        uint8  // default 4
	version     uint8  // default 4
	wrongOrigin bool
	truncate    int // send only this many bytes (0 = all)
	silent      bool
	zeroXmt     bool
	backwards   bool // transmit timestamp one second before receive
	rootDelay   ntp.Short
	rootDisp    ntp.Short
	hold        time.Duration // between receive and transmit timestamps
	strayFirst  bool          // send a reply with a wrong origin before the real one
}

// server is a small NTP server on 127.0.0.1, started by the test.
type server struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	b       behaviour
	queries atomic.Int64
	wg      sync.WaitGroup
}

func startServer(t testing.TB, b behaviour) *server {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &server{conn: conn, b: b}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		conn.Close()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.conn.LocalAddr().String() }

func (s *server) set(b behaviour) {
	s.mu.Lock()
	s.b = b
	s.mu.Unlock()
}

// serve answers until the socket is closed.
func (s *server) serve() {
	defer s.wg.Done()
	buf := make([]byte, 512)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		recv := time.Now()
		s.queries.Add(1)
		s.mu.Lock()
		b := s.b
		s.mu.Unlock()
		req, err := ntp.ParsePacket(buf[:n])
		if err != nil || req.Mode != ntp.ModeClient || b.silent {
			continue
		}
		if b.hold > 0 {
			time.Sleep(b.hold)
		}
		rep := &ntp.Packet{
			Leap: b.leap, Version: 4, Mode: ntp.ModeServer, Stratum: 2, Poll: 4, Precision: -20,
			RootDelay: b.rootDelay, RootDispersion: b.rootDisp,
			ReferenceID: [4]byte{127, 0, 0, 1},
			Origin:      req.Transmit,
			Receive:     ntp.TimestampFrom(recv.Add(b.offset)),
			Transmit:    ntp.TimestampFrom(time.Now().Add(b.offset)),
		}
		rep.Reference = rep.Receive
		if b.stratum != 0 {
			rep.Stratum = b.stratum
		}
		if b.kiss != "" {
			rep.Stratum, rep.Leap = 0, 3
			copy(rep.ReferenceID[:], b.kiss)
		}
		if b.mode != 0 {
			rep.Mode = b.mode
		}
		if b.version != 0 {
			rep.Version = b.version
		}
		if b.wrongOrigin {
			rep.Origin ^= 1 << 40
		}
		if b.zeroXmt {
			rep.Transmit = 0
		}
		if b.backwards {
			rep.Transmit = ntp.TimestampFrom(recv.Add(b.offset - time.Second))
		}
		out := rep.Marshal()
		if b.truncate > 0 {
			out = out[:b.truncate]
		}
		if b.strayFirst {
			stray := *rep
			stray.Origin ^= 0xff
			stray.Receive = ntp.TimestampFrom(recv.Add(time.Hour))
			_, _ = s.conn.WriteToUDP(stray.Marshal(), from)
		}
		_, _ = s.conn.WriteToUDP(out, from)
	}
}
