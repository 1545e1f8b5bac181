#!/usr/bin/env bash
# RSS over a long mixed load: proxied GETs and refresh rotations against one `bffgate serve`
# for SOAK_SECONDS (default 600), the gateway's resident memory sampled every 30 s.
#
#   bash bench/soak.sh            # ten minutes; prints "seconds rss_kib" lines and a summary
#
# Starts its own redis-server and nginx upstream on free loopback ports
# (bench/one-gateway.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS="${SOAK_SECONDS:-600}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
. bench/one-gateway.sh
start_gateway
COOKIE="$(login)"
: > "$WORK/chains.txt"; for _ in $(seq 1 8); do login >> "$WORK/chains.txt"; done
wrk -t1 -c16 -d"${SOAK_SECONDS}s" "http://127.0.0.1:$GW_PORT/api/me" -H "Cookie: $COOKIE" -H 'X-CSRF: 1' \
  > "$WORK/get.wrk" 2>&1 & PIDS+=($!)
wrk -t8 -c8 -d"${SOAK_SECONDS}s" "http://127.0.0.1:$GW_PORT/auth/refresh" -s bench/rotate.lua -- "$WORK/chains.txt" \
  > "$WORK/rotate.wrk" 2>&1 & PIDS+=($!)
first=""; last=""
for t in $(seq 30 30 "$SOAK_SECONDS"); do
  sleep 30
  rss="$(awk '/VmRSS/ {print $2}' /proc/$GW/status)"; echo "$t $rss"
  [ -n "$first" ] || first="$rss"; last="$rss"
done
wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
echo "proxied GETs: $(awk '/^Requests\/sec:/ {print $2}' "$WORK/get.wrk")/s; rotations: $(awk '/^Requests\/sec:/ {print $2}' "$WORK/rotate.wrk")/s"
echo "RSS after 30 s: $((first / 1024)) MiB, at the end: $((last / 1024)) MiB, peak: $(( $(awk '/VmHWM/ {print $2}' /proc/$GW/status) / 1024 )) MiB"
