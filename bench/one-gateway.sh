# Sourced by bench/profile.sh and bench/soak.sh: one `bffgate serve` (release build) on its
# own redis-server, with a route /api to a small nginx upstream, all on free loopback ports,
# and a user to sign in as. Everything started is stopped (and $WORK removed) on exit.
#
# After sourcing: $BIN, $WORK, $GW_PORT; `start_gateway [COMMAND...]` runs the gateway
# (under COMMAND, e.g. valgrind, when given), sets $GW to its pid and waits until it is
# ready; `login` prints a fresh session cookie ("__Host-bff=…").
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { apt-get update -q && apt-get install -y -q nginx-light; NGINX="$(command -v nginx || echo /usr/sbin/nginx)"; }
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
printf 'a bench password' | "$BIN" user add bench@example.com --password-stdin >/dev/null

start_gateway() { # [COMMAND...]
  BFFGATE_LOG=warn "$@" "$BIN" serve 2>"$WORK/gateway.log" & GW=$!; PIDS+=($GW)
  for _ in $(seq 1 600); do curl -fs -o /dev/null "http://127.0.0.1:$GW_PORT/readyz" && return 0; sleep 0.1; done
  echo "the gateway did not become ready" >&2; return 1
}

login() {
  curl -fs -D - -o /dev/null -H 'X-CSRF: 1' -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"a bench password"}' "http://127.0.0.1:$GW_PORT/auth/login" |
    awk 'tolower($1)=="set-cookie:" { sub(/\r$/, ""); split($2, a, ";"); print a[1] }'
}
