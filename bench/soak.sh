#!/usr/bin/env bash
# RSS over a long mixed load: proxied GETs and refresh rotations against one `bffgate serve`
# for SOAK_SECONDS (default 600), the gateway's resident memory sampled every 30 s.
#
#   bash bench/soak.sh            # ten minutes; prints "seconds rss_kib" lines and a verdict
#
# Starts its own redis-server and nginx upstream on free loopback ports (like run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS="${SOAK_SECONDS:-600}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt-get install -y -q nginx-light
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build --release -q --bins
BIN=target/release/bffgate
WORK="$(mktemp -d)"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$NGINX" -p "$WORK/nginx" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT="$(free_port)"; UP_PORT="$(free_port)"; GW_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$WORK/redis.log" & PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$UP_PORT;
  location / { default_type application/json; return 200 '{"id":"u1"}'; } } }
NGINX
"$NGINX" -p "$WORK/nginx" -c nginx.conf
"$BIN" keys generate --cookie-key-out "$WORK/cookie.key" --signing-key-out "$WORK/ed25519.pem" >/dev/null
cat > "$WORK/bffgate.toml" <<TOML
listen = "127.0.0.1:$GW_PORT"
public_origin = "http://127.0.0.1:$GW_PORT"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
[cookie]
key_file = "$WORK/cookie.key"
[jwt]
signing_key_file = "$WORK/ed25519.pem"
[session]
access_ttl = "1h"
[throttle]
enabled = false
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
TOML
export BFFGATE_CONFIG="$WORK/bffgate.toml"
printf 'a soak password' | "$BIN" user add soak@example.com --password-stdin >/dev/null
BFFGATE_LOG=warn "$BIN" serve 2>"$WORK/gateway.log" & GW=$!; PIDS+=($GW)
for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$GW_PORT/readyz" && break; sleep 0.05; done
login() { curl -fs -D - -o /dev/null -H 'X-CSRF: 1' -H 'Content-Type: application/json' \
  -d '{"email":"soak@example.com","password":"a soak password"}' "http://127.0.0.1:$GW_PORT/auth/login" |
  awk 'tolower($1)=="set-cookie:" { sub(/\r$/, ""); split($2, a, ";"); print a[1] }'; }
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
