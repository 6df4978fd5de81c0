// Package ratelimit holds the gateway's handshake brakes: a token bucket per
// source prefix (Limiter) and a global "under load" detector (Load).
//
// A Limiter gives every source an IPv4 /32 or an IPv6 /64 (one customer
// network) a bucket of Burst handshakes refilled at PerSecond. Its table
// never holds more than MaxEntries sources: when it is full a new source is
// refused (fail closed for handshakes) and counted, after at most one sweep
// per refill time to make room. A bucket that has refilled completely is the
// same as no entry, so Sweep drops exactly those and a swept source is
// treated as it was.
//
// A Load counts handshake messages over a sliding one-second window and
// reports UnderLoad from the moment the count reaches Threshold until it
// falls to Release or below (hysteresis, so cookies are not switched on and
// off with every packet). The gateway requires address proof (a cookie or an
// address token) from everyone while it is under load.
//
// Both are pure (the time is an argument; no I/O, no goroutines) and safe
// for concurrent use, each under one mutex. They must not decide anything
// about authentication: a source allowed here still has to pass the cookie
// and handshake checks.
package ratelimit
