#!/usr/bin/env bash
# tunnel-vs-wireguard-go.sh — one TCP stream, agent namespace -> resource
# namespace, through (1) the AVON tunnel and (2) wireguard-go, measured with
# iperf3 in one run on the same namespace layout; plus the plain routed path
# as the ceiling of this machine. Prints a table (Gbit/s and the ratio).
#
#   agent 198.18.0.2/24 <-veth-> 198.18.0.1/24 gw 10.77.0.1/24 <-veth-> 10.77.0.2/24 res
#
# Needs root, iproute2, ping (iputils-ping), iperf3, jq, go; wireguard-tools (`wg`) is installed
# with apt-get when missing. wireguard-go is built with `go install` into a
# temporary GOBIN at the version in go.mod. Everything the script creates
# (namespaces, processes in them, temp files) is removed on exit, failure or
# interrupt. See bench/README.md.
#
# Environment: PERF_DIR (record system-wide perf samples of each stream
# there), DURATION (iperf3 -t, default 10), AVON_BIN (a directory with
# avon, avon-agent, kms-soft, ca-dilithium already built; default: build them
# into the temp dir), KEEP_TMP=1 (leave the temp dir, e.g. to read logs).
set -euo pipefail

DURATION=${DURATION:-10}
WG_VERSION=v0.0.0-20260522210424-ecfc5a8d5446
REPO=$(cd "$(dirname "$0")/.." && pwd)
P="avb$$"                                  # unique prefix: namespaces, interface names
NS_AG="$P-agent" NS_GW="$P-gw" NS_RES="$P-res"
TMP=$(mktemp -d "/tmp/$P.XXXXXX")

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls every 0.2 s, bounded.
wait_for() {
	local secs=$1 what=$2; shift 2
	local i
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	"$@" >/dev/null 2>&1 || die "$what: not within ${secs} s"
}

# kill_ns_pids NS: ends the processes running in our namespace NS (all
# started by this script), TERM first, then KILL after a bounded wait.
kill_ns_pids() {
	local ns=$1 pids i
	pids=$(ip netns pids "$ns" 2>/dev/null || true)
	[ -n "$pids" ] || return 0
	kill -TERM $pids 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -n "$pids" ] || return 0
		sleep 0.2
	done
	kill -KILL $pids 2>/dev/null || true
	for ((i = 0; i < 25; i++)); do
		[ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] || return 0
		sleep 0.2
	done
}

# stop_core: SIGTERM to the core first so it stops its plugins itself.
stop_core() {
	local i
	[ -n "${CORE_PID:-}" ] || return 0
	kill -TERM "$CORE_PID" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$CORE_PID" 2>/dev/null || break
		sleep 0.2
	done
	wait "$CORE_PID" 2>/dev/null || true
	CORE_PID=
}

teardown_ns() {
	local ns
	stop_core
	for ns in "$NS_AG" "$NS_GW" "$NS_RES"; do
		ip netns list 2>/dev/null | grep -qw -- "$ns" || continue
		kill_ns_pids "$ns"
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -f "/var/run/wireguard/${P}g.sock" "/var/run/wireguard/${P}w.sock" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	set +e
	if [ -n "${AGENT_STATE:-}" ] && [ -x "${AVB:-}/avon-agent" ]; then
		timeout 20 ip netns exec "$NS_AG" "$AVB/avon-agent" down -state "$AGENT_STATE" >/dev/null 2>&1
	fi
	teardown_ns
	if [ "${KEEP_TMP:-0}" = 1 ]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
for c in ip ping iperf3 jq go sha256sum timeout; do command -v "$c" >/dev/null || die "$c not found"; done

# setup_ns: the three namespaces, both veth links, forwarding in gw.
setup_ns() {
	local ns
	for ns in "$NS_AG" "$NS_GW" "$NS_RES"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
	done
	ip link add "${P}a" netns "$NS_AG" type veth peer name "${P}ga" netns "$NS_GW"
	ip link add "${P}r" netns "$NS_RES" type veth peer name "${P}gr" netns "$NS_GW"
	ip -n "$NS_AG" addr add 198.18.0.2/24 dev "${P}a"
	ip -n "$NS_GW" addr add 198.18.0.1/24 dev "${P}ga"
	ip -n "$NS_GW" addr add 10.77.0.1/24 dev "${P}gr"
	ip -n "$NS_RES" addr add 10.77.0.2/24 dev "${P}r"
	ip -n "$NS_AG" link set "${P}a" up
	ip -n "$NS_GW" link set "${P}ga" up
	ip -n "$NS_GW" link set "${P}gr" up
	ip -n "$NS_RES" link set "${P}r" up
	ip netns exec "$NS_GW" sysctl -qw net.ipv4.ip_forward=1
}

# iperf NAME: one TCP stream agent -> res for DURATION s; prints Gbit/s
# (receiver side) and keeps the JSON in $TMP/NAME.json.
iperf() {
	local name=$1 out="$TMP/$1.json"
	ip netns exec "$NS_RES" timeout $((DURATION + 60)) iperf3 -s -1 -B 10.77.0.2 >"$TMP/$name-server.log" 2>&1 &
	local srv=$!
	wait_for 10 "iperf3 server in res" ip netns exec "$NS_RES" sh -c 'ss -Hltn "sport = :5201" | grep -q .'
	local perfpid=
	if [ -n "${PERF_DIR:-}" ]; then
		# System-wide samples (both engines, the kernel, iperf3) while the
		# stream runs; `perf report -i $PERF_DIR/NAME.perf.data` reads them.
		perf record -a -g -F 499 -o "$PERF_DIR/$name.perf.data" -- sleep $((DURATION > 3 ? DURATION - 2 : 1)) >/dev/null 2>&1 &
		perfpid=$!
	fi
	if ! ip netns exec "$NS_AG" timeout $((DURATION + 30)) iperf3 -c 10.77.0.2 -t "$DURATION" -J >"$out"; then
		kill "$srv" 2>/dev/null || true
		wait "$srv" 2>/dev/null || true
		die "$name: iperf3 client failed: $(jq -r '.error // empty' "$out" 2>/dev/null)"
	fi
	wait "$srv" 2>/dev/null || true
	[ -z "$perfpid" ] || wait "$perfpid" 2>/dev/null || true
	jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | round / 100' "$out"
}

# --- plain routing (the ceiling: same veths, no tunnel) ----------------------
log "namespaces ($P): plain routed path"
setup_ns
ip -n "$NS_AG" route add 10.77.0.0/24 via 198.18.0.1
ip -n "$NS_RES" route add 198.18.0.0/24 via 10.77.0.1
RAW=$(iperf raw)
log "routed: $RAW Gbit/s"
teardown_ns

# --- AVON ---------------------------------------------------------------------
if [ -n "${AVON_BIN:-}" ]; then
	AVB=$AVON_BIN
else
	AVB="$TMP/bin"
	log "building avon, avon-agent, kms-soft, ca-dilithium"
	mkdir -p "$AVB"
	(cd "$REPO" && timeout 600 go build -trimpath -o "$AVB/" ./core/cmd/avon ./agent/cmd/avon-agent ./plugins/kms-soft ./plugins/ca-dilithium)
fi
for b in avon avon-agent kms-soft ca-dilithium; do [ -x "$AVB/$b" ] || die "$AVB/$b missing"; done

log "namespaces ($P): AVON tunnel"
setup_ns
ip -n "$NS_RES" route add 100.96.0.0/16 via 10.77.0.1
CFG="$TMP/avon.hcl"
cat >"$CFG" <<EOF
data_dir  = "$TMP/avon-data"
log_level = "info"
api {
  listen = "198.18.0.1:8443"
}
gateway {
  listen         = "0.0.0.0:4600"
  endpoint       = "198.18.0.1:4600"
  tunnel_cidr    = "100.96.0.0/16"
  routes         = ["10.77.0.0/24"]
  interface      = "${P}t"
  pulse_interval = "2s"
}
plugin "kms" "soft" {
  command = "$AVB/kms-soft"
  sha256  = "$(sha256sum "$AVB/kms-soft" | cut -d' ' -f1)"
  config {
    key_file        = "k"
    create_key_file = true
    kdf_time        = 2
    kdf_memory_kib  = 19456
    kdf_threads     = 1
  }
}
plugin "ca" "dilithium" {
  command = "$AVB/ca-dilithium"
  sha256  = "$(sha256sum "$AVB/ca-dilithium" | cut -d' ' -f1)"
  uses    = { kms = "soft" }
}
EOF
CORE_LOG="$TMP/core.log"
ip netns exec "$NS_GW" "$AVB/avon" server -config "$CFG" >"$CORE_LOG" 2>&1 &
CORE_PID=$!
wait_for 90 "avon core started (log: $CORE_LOG)" grep -q "avon core started" "$CORE_LOG"
grep -q "gateway started" "$CORE_LOG" || die "the core started without its gateway"
FP=$(sed -n 's/.*api certificate: sha256=\([0-9a-f]\{64\}\).*/\1/p' "$CORE_LOG" | head -n1)
[ -n "$FP" ] || die "no API fingerprint in the core's log"
TOKEN=$(timeout 60 "$AVB/avon" token create -group bench -json -config "$CFG" | jq -r '.token // .Token')
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || die "avon token create gave no token"
AGENT_STATE="$TMP/agent"
AVON_ENROLL_TOKEN=$TOKEN timeout 60 ip netns exec "$NS_AG" "$AVB/avon-agent" enroll \
	--server https://198.18.0.1:8443 --server-fingerprint "$FP" --state-dir "$AGENT_STATE" >"$TMP/enroll.log" 2>&1 ||
	die "avon-agent enroll: $(cat "$TMP/enroll.log")"
timeout 60 ip netns exec "$NS_AG" "$AVB/avon-agent" up -state "$AGENT_STATE" >"$TMP/up.log" 2>&1 ||
	die "avon-agent up: $(cat "$TMP/up.log")"
agent_up() {
	[ "$(timeout 10 ip netns exec "$NS_AG" "$AVB/avon-agent" status -state "$AGENT_STATE" -json | jq -r '.state // .State')" = up ]
}
wait_for 60 "AVON tunnel up" agent_up
wait_for 10 "ping through the AVON tunnel" ip netns exec "$NS_AG" ping -c1 -W1 10.77.0.2
AVON_MTU=$(ip -n "$NS_AG" -j route get 10.77.0.2 | jq -r '.[0].dev' | xargs -I{} ip -n "$NS_AG" -j link show dev {} | jq -r '.[0].mtu')
AVON=$(iperf avon)
log "AVON: $AVON Gbit/s"
timeout 20 ip netns exec "$NS_AG" "$AVB/avon-agent" down -state "$AGENT_STATE" >/dev/null 2>&1 || true
AGENT_STATE=
teardown_ns

# --- wireguard-go -------------------------------------------------------------
if ! command -v wg >/dev/null; then
	log "installing wireguard-tools"
	timeout 300 apt-get install -y wireguard-tools >"$TMP/apt.log" 2>&1 ||
		{ timeout 300 apt-get update >>"$TMP/apt.log" 2>&1 && timeout 300 apt-get install -y wireguard-tools >>"$TMP/apt.log" 2>&1; } ||
		die "apt-get install wireguard-tools: $(tail -n5 "$TMP/apt.log")"
fi
log "go install golang.zx2c4.com/wireguard@$WG_VERSION (temporary GOBIN)"
(cd "$TMP" && GOBIN="$TMP/gobin" GOFLAGS=-buildvcs=false timeout 600 go install "golang.zx2c4.com/wireguard@$WG_VERSION")
WGGO="$TMP/gobin/wireguard"
[ -x "$WGGO" ] || die "wireguard-go was not built"

log "namespaces ($P): wireguard-go"
setup_ns
# The UAPI socket (/var/run/wireguard/<name>.sock) is not per namespace,
# so each side gets its own interface name.
WG_GW="${P}g" WG_AG="${P}w"
ip netns exec "$NS_GW" "$WGGO" -f "$WG_GW" >"$TMP/wg-gw.log" 2>&1 &
ip netns exec "$NS_AG" "$WGGO" -f "$WG_AG" >"$TMP/wg-agent.log" 2>&1 &
wait_for 10 "wireguard-go in gw" ip -n "$NS_GW" link show dev "$WG_GW"
wait_for 10 "wireguard-go in agent" ip -n "$NS_AG" link show dev "$WG_AG"
umask 077
wg genkey >"$TMP/gw.key"
wg genkey >"$TMP/ag.key"
GW_PUB=$(wg pubkey <"$TMP/gw.key")
AG_PUB=$(wg pubkey <"$TMP/ag.key")
ip netns exec "$NS_GW" wg set "$WG_GW" listen-port 51820 private-key "$TMP/gw.key" \
	peer "$AG_PUB" allowed-ips 100.97.0.2/32
ip netns exec "$NS_AG" wg set "$WG_AG" private-key "$TMP/ag.key" \
	peer "$GW_PUB" endpoint 198.18.0.1:51820 allowed-ips 100.97.0.0/24,10.77.0.0/24
ip -n "$NS_GW" addr add 100.97.0.1/24 dev "$WG_GW"
ip -n "$NS_AG" addr add 100.97.0.2/24 dev "$WG_AG"
ip -n "$NS_GW" link set "$WG_GW" up
ip -n "$NS_AG" link set "$WG_AG" up
ip -n "$NS_AG" route add 10.77.0.0/24 dev "$WG_AG"
ip -n "$NS_RES" route add 100.97.0.0/24 via 10.77.0.1
wait_for 10 "ping through wireguard-go" ip netns exec "$NS_AG" ping -c1 -W1 10.77.0.2
WG_MTU=$(ip -n "$NS_AG" -j link show dev "$WG_AG" | jq -r '.[0].mtu')
WG=$(iperf wireguard-go)
log "wireguard-go: $WG Gbit/s"
teardown_ns

# --- the table ----------------------------------------------------------------
ratio() { jq -n --argjson a "$1" --argjson b "$2" 'if $b > 0 then ($a / $b * 100 | round / 100) else "n/a" end'; }
printf '\n%s, %s s, one TCP stream agent -> res (iperf3 receiver), load: %s\n' \
	"$(date -u +%FT%TZ)" "$DURATION" "$(uptime | sed 's/.*load average: //')"
printf '%-24s %10s %10s %8s\n' "path" "Gbit/s" "vs routed" "MTU"
printf '%-24s %10s %10s %8s\n' "routed (no tunnel)" "$RAW" "1" "1500"
printf '%-24s %10s %10s %8s\n' "AVON tunnel" "$AVON" "$(ratio "$AVON" "$RAW")" "$AVON_MTU"
printf '%-24s %10s %10s %8s\n' "wireguard-go" "$WG" "$(ratio "$WG" "$RAW")" "$WG_MTU"
printf 'AVON / wireguard-go: %s\n' "$(ratio "$AVON" "$WG")"
