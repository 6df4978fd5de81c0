package ntp

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/avonzt/avon/core/calibration"
)

// PacketLen is the length of the NTP header; extension fields and MACs
// that may follow it are ignored.
const PacketLen = 48

// MaxDispersion bounds root delay and root dispersion (RFC 5905 MAXDISP).
const MaxDispersion = 16 * time.Second

// NTP modes used here.
const (
	ModeClient = 3
	ModeServer = 4
)

// LeapAlarm is the leap indicator of an unsynchronized clock.
const LeapAlarm = 3

// Timestamp is the NTP 64-bit timestamp: seconds since 1900-01-01 in the
// high 32 bits (modulo 2^32: the era is not on the wire) and a binary
// fraction of a second in the low 32 bits.
type Timestamp uint64

// ntpEpochOffset is the number of seconds from 1900-01-01 to 1970-01-01.
const ntpEpochOffset = 2208988800

// TimestampFrom encodes t.
func TimestampFrom(t time.Time) Timestamp {
	secs := t.Unix() + ntpEpochOffset
	frac := (uint64(t.Nanosecond())<<32 + 1e9/2) / 1e9
	return Timestamp(uint64(uint32(secs))<<32 + frac)
}

// Time decodes ts in the era that puts it within 68 years of pivot, so
// timestamps keep working past the 2036 era rollover.
func (ts Timestamp) Time(pivot time.Time) time.Time {
	pivotSecs := pivot.Unix() + ntpEpochOffset
	d := int64(int32(uint32(ts>>32) - uint32(pivotSecs)))
	ns := (uint64(uint32(ts))*1e9 + 1<<31) >> 32
	return time.Unix(pivotSecs+d-ntpEpochOffset, int64(ns))
}

// Short is the NTP 32-bit short format: 16 bits of seconds and 16 bits of
// fraction.
type Short uint32

// Duration converts s.
func (s Short) Duration() time.Duration {
	return time.Duration((uint64(s)*uint64(time.Second) + 1<<15) >> 16)
}

// Packet is an NTP header.
type Packet struct {
	Leap           uint8 // 2 bits
	Version        uint8 // 3 bits
	Mode           uint8 // 3 bits
	Stratum        uint8
	Poll           int8
	Precision      int8
	RootDelay      Short
	RootDispersion Short
	ReferenceID    [4]byte
	Reference      Timestamp
	Origin         Timestamp
	Receive        Timestamp
	Transmit       Timestamp
}

// ParsePacket decodes the header of untrusted bytes. It checks only the
// length (*ErrShortPacket); CheckReply judges the contents.
func ParsePacket(b []byte) (*Packet, error) {
	if len(b) < PacketLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrShortPacket, len(b))
	}
	p := &Packet{
		Leap:           b[0] >> 6,
		Version:        b[0] >> 3 & 7,
		Mode:           b[0] & 7,
		Stratum:        b[1],
		Poll:           int8(b[2]),
		Precision:      int8(b[3]),
		RootDelay:      Short(binary.BigEndian.Uint32(b[4:])),
		RootDispersion: Short(binary.BigEndian.Uint32(b[8:])),
		Reference:      Timestamp(binary.BigEndian.Uint64(b[16:])),
		Origin:         Timestamp(binary.BigEndian.Uint64(b[24:])),
		Receive:        Timestamp(binary.BigEndian.Uint64(b[32:])),
		Transmit:       Timestamp(binary.BigEndian.Uint64(b[40:])),
	}
	copy(p.ReferenceID[:], b[12:16])
	return p, nil
}

// Marshal encodes the 48-byte header. Leap, Version and Mode are masked
// to their field widths.
func (p *Packet) Marshal() []byte {
	b := make([]byte, PacketLen)
	b[0] = p.Leap&3<<6 | p.Version&7<<3 | p.Mode&7
	b[1] = p.Stratum
	b[2] = byte(p.Poll)
	b[3] = byte(p.Precision)
	binary.BigEndian.PutUint32(b[4:], uint32(p.RootDelay))
	binary.BigEndian.PutUint32(b[8:], uint32(p.RootDispersion))
	copy(b[12:16], p.ReferenceID[:])
	binary.BigEndian.PutUint64(b[16:], uint64(p.Reference))
	binary.BigEndian.PutUint64(b[24:], uint64(p.Origin))
	binary.BigEndian.PutUint64(b[32:], uint64(p.Receive))
	binary.BigEndian.PutUint64(b[40:], uint64(p.Transmit))
	return b
}

// CheckReply judges p as the reply to a request whose transmit timestamp
// was sent. In order: server mode, version 3 or 4, origin echo (so nothing
// below is believed from a packet that does not answer us), kiss-of-death,
// leap alarm, stratum 1..15, non-zero receive and transmit timestamps,
// root delay and dispersion within MaxDispersion.
func (p *Packet) CheckReply(sent Timestamp) error {
	switch {
	case p.Mode != ModeServer:
		return fmt.Errorf("%w: mode %d", ErrBadMode, p.Mode)
	case p.Version != 3 && p.Version != 4:
		return fmt.Errorf("%w: version %d", ErrBadVersion, p.Version)
	case p.Origin != sent:
		return ErrOriginMismatch
	case p.Stratum == 0:
		return &KissError{Code: kissCode(p.ReferenceID)}
	case p.Leap == LeapAlarm:
		return ErrUnsynchronized
	case p.Stratum > 15:
		return fmt.Errorf("%w: stratum %d", ErrBadStratum, p.Stratum)
	case p.Receive == 0 || p.Transmit == 0:
		return ErrZeroTimestamp
	case p.RootDelay.Duration() > MaxDispersion || p.RootDispersion.Duration() > MaxDispersion:
		return fmt.Errorf("%w: root delay %s, root dispersion %s", ErrRootDistance, p.RootDelay.Duration(), p.RootDispersion.Duration())
	}
	return nil
}

// Measure computes a sample from a checked reply. t1 is the local wall
// clock when the request left and rtt the monotonic time until the reply
// arrived, so a wall-clock step during the exchange cannot distort it:
//
//	T4 = T1 + rtt
//	offset θ = ((T2-T1) + (T3-T4)) / 2
//	delay  δ = (T4-T1) - (T3-T2)   (clamped at 0)
//	uncertainty = δ/2 + root dispersion + root delay/2
func Measure(p *Packet, t1 time.Time, rtt time.Duration) (calibration.Sample, error) {
	t1 = t1.Round(0)
	t2, t3 := p.Receive.Time(t1), p.Transmit.Time(t1)
	t4 := t1.Add(rtt)
	if t3.Before(t2) {
		return calibration.Sample{}, fmt.Errorf("%w: transmit %s before receive %s", ErrBadTimestamps, t3.Format(time.RFC3339Nano), t2.Format(time.RFC3339Nano))
	}
	offset := t2.Sub(t1)/2 + t3.Sub(t4)/2
	delay := max(rtt-t3.Sub(t2), 0)
	return calibration.Sample{
		Offset:      offset,
		Uncertainty: delay/2 + p.RootDispersion.Duration() + p.RootDelay.Duration()/2,
		Delay:       delay,
		Stratum:     int(p.Stratum),
	}, nil
}
