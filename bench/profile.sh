#!/usr/bin/env bash
# Instruction counts of the gateway's hot paths under callgrind (stable on a busy machine,
# unlike wall time): a proxied GET and a refresh rotation.
#
#   bash bench/profile.sh [get|refresh] [REQUESTS]    # prints the top functions, inclusive
#
# Builds the release binary, starts its own redis-server and a small nginx upstream on free
# loopback ports, runs `bffgate serve` under valgrind --tool=callgrind, sends REQUESTS
# (default 2000) requests with one connection, stops the gateway and annotates. Needs
# valgrind (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-get}"; N="${2:-2000}"
command -v valgrind >/dev/null || { apt-get update -q && apt-get install -y -q valgrind; }
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt-get install -y -q nginx-light
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build --release -q --bins
BIN=target/release/bffgate
WORK="$(mktemp -d)"; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$NGINX" -p "$WORK/nginx" -c nginx.conf -s stop 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT="$(free_port)"; UP_PORT="$(free_port)"; GW_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$WORK/redis.log" & PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 256; }
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
printf 'a profile password' | "$BIN" user add p@example.com --password-stdin >/dev/null
BFFGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
  "$BIN" serve 2>"$WORK/gateway.log" & GW=$!; PIDS+=($GW)
for _ in $(seq 1 600); do curl -fs -o /dev/null "http://127.0.0.1:$GW_PORT/readyz" && break; sleep 0.1; done
COOKIE="$(curl -fs -D - -o /dev/null -H 'X-CSRF: 1' -H 'Content-Type: application/json' \
  -d '{"email":"p@example.com","password":"a profile password"}' "http://127.0.0.1:$GW_PORT/auth/login" |
  awk 'tolower($1)=="set-cookie:" { sub(/\r$/, ""); split($2, a, ";"); print a[1] }')"
# Warm-up (tracking, pools), then the counted requests: instructions are read as the
# difference of two dumps.
curl -fs -o /dev/null -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "http://127.0.0.1:$GW_PORT/api/me"
sleep 2
callgrind_control -z "$GW" >/dev/null
python3 - "$WHAT" "$N" "$GW_PORT" "$COOKIE" <<'PY'
import http.client, sys
what, n, port, cookie = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    if what == "get":
        c.request("GET", "/api/me", headers={"Cookie": cookie, "X-CSRF": "1"})
    else:
        c.request("POST", "/auth/refresh", headers={"Cookie": cookie, "X-CSRF": "1", "Content-Length": "0"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    if what != "get":
        sc = r.getheader("Set-Cookie"); cookie = sc.split(";")[0]
PY
callgrind_control -d "$GW" >/dev/null
sleep 1
OUT="$(ls -t "$WORK"/callgrind.out.* | head -1)"
TOTAL="$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')"
echo "$WHAT: $TOTAL instructions for $N requests: $(( TOTAL / N )) per request"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | sed -n '1,200p' | grep -v '^--' | head -${TOP:-60}
