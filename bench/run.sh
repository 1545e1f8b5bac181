#!/usr/bin/env bash
# bffgate benchmarks, in one run on this machine, beside a plain nginx reverse proxy.
#
#   bash bench/run.sh            # about 8 minutes; writes bench/results.md
#   ROUND_SECONDS=5 ROUNDS=2 SCALE_FAMILIES=100000 bash bench/run.sh   # a quicker pass
#   REDIS_MODE=cluster bash bench/run.sh   # on a three-primary Redis Cluster instead;
#                                          # writes bench/results-cluster.md
#
# Starts its own redis-server, an nginx serving a fast upstream and proxying to it (with
# keep-alive: the floor of proxying with no auth at all), and `bffgate serve` with a route
# to the same upstream — twice more on the same store: a second instance for the revocation
# delay, and one with `redis.track_liveness = false` (every request asks Redis), measured
# beside the first. Every load is bounded in time and targets 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
ROUND_SECONDS="${ROUND_SECONDS:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
CHAINS="${CHAINS:-32}"
REVOCATIONS="${REVOCATIONS:-200}"
MEMORY_FAMILIES="${MEMORY_FAMILIES:-100000}"
SCALE_FAMILIES="${SCALE_FAMILIES:-1000000}"
REDIS_MODE="${REDIS_MODE:-standalone}"
case "$REDIS_MODE" in
  standalone) OUT="${OUT:-bench/results.md}" ;;
  cluster) OUT="${OUT:-bench/results-cluster.md}" ;;
  *) echo "REDIS_MODE must be standalone or cluster" >&2; exit 2 ;;
esac
CORES="$(nproc)"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

echo "building release binaries…" >&2
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build --release -q --bins --example bench-tool
BIN=target/release/bffgate
TOOL=target/release/examples/bench-tool

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$NGINX" -p "$WORK/nginx" -c nginx.conf -s stop 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "not ready: $1" >&2; return 1
}

REDIS_PORT="$(free_port)"; UP_PORT="$(free_port)"; NGINX_PORT="$(free_port)"; GW_PORT="$(free_port)"
GW2_PORT="$(free_port)"; GWU_PORT="$(free_port)"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
REDIS_PORTS=("$REDIS_PORT")
REDIS_TOML="url = \"$REDIS_URL\""
if [ "$REDIS_MODE" = cluster ]; then
  REDIS_PORTS+=("$(free_port)" "$(free_port)")
fi

for port in "${REDIS_PORTS[@]}"; do
  extra=()
  [ "$REDIS_MODE" = cluster ] && extra=(--cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
    --cluster-port "$(free_port)" --dir "$WORK")
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$WORK/redis-$port.log" "${extra[@]}" &
  PIDS+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
if [ "$REDIS_MODE" = cluster ]; then
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") --cluster-yes >/dev/null
  for port in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 1 200); do
      redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' && break; sleep 0.05
    done
  done
  REDIS_URL="$(printf 'redis://127.0.0.1:%s,' "${REDIS_PORTS[@]}")"; REDIS_URL="${REDIS_URL%,}"
  REDIS_TOML="mode = \"cluster\"
nodes = [$(printf '"redis://127.0.0.1:%s", ' "${REDIS_PORTS[@]}" | sed 's/, $//')]"
fi
flush_redis() { for port in "${REDIS_PORTS[@]}"; do redis-cli -p "$port" flushall >/dev/null; done; }
redis_memory() { # used_memory summed over the nodes
  for port in "${REDIS_PORTS[@]}"; do redis-cli -p "$port" info memory; done |
    awk -F: '/^used_memory:/ {n+=$2} END {print n+0}'
}

# nginx: the fast upstream (a small JSON answer) and the reference proxy in front of it.
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{"id":"u1","email":"alice@example.com","roles":["admin"]}'; }
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c nginx.conf

COOKIE_KEY="$(head -c 64 /dev/urandom | base64 -w0)"
# A [redis] gateway signs with a key file every instance shares (config check requires it).
"$BIN" keys generate --cookie-key-out "$WORK/cookie.key" --signing-key-out "$WORK/ed25519.pem" >/dev/null
cat > "$WORK/bffgate.toml" <<EOF
listen = "127.0.0.1:$GW_PORT"
public_origin = "http://127.0.0.1:$GW_PORT"
[redis]
$REDIS_TOML
key_prefix = "bench:"
[cookie]
key = "$COOKIE_KEY"
[jwt]
signing_key_file = "$WORK/ed25519.pem"
[session]
# Long enough that the proxy rounds never rotate (their cookie is fixed).
access_ttl = "1h"
refresh_before = "60s"
[throttle]
enabled = false
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
EOF
# The second instance (same store and keys), and the untracked one.
sed "s/127.0.0.1:$GW_PORT/127.0.0.1:$GW2_PORT/" "$WORK/bffgate.toml" > "$WORK/bffgate-2.toml"
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GWU_PORT/" -e 's/^key_prefix = .*/&\ntrack_liveness = false/' \
  "$WORK/bffgate.toml" > "$WORK/bffgate-untracked.toml"
export BFFGATE_CONFIG="$WORK/bffgate.toml"
printf 'a benchmark password' | "$BIN" user add bench@example.com --password-stdin >/dev/null
BFFGATE_LOG=warn "$BIN" serve 2>"$WORK/gateway.log" &
GW_PID=$!
PIDS+=($GW_PID)
BFFGATE_CONFIG="$WORK/bffgate-2.toml" BFFGATE_LOG=warn "$BIN" serve 2>"$WORK/gateway-2.log" &
PIDS+=($!)
BFFGATE_CONFIG="$WORK/bffgate-untracked.toml" BFFGATE_LOG=warn "$BIN" serve 2>"$WORK/gateway-untracked.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_PORT/readyz"
wait_http "http://127.0.0.1:$GW2_PORT/readyz"
wait_http "http://127.0.0.1:$GWU_PORT/readyz"
wait_http "http://127.0.0.1:$NGINX_PORT/api/me"

login_cookie() { # prints "__Host-bff=<value>"
  curl -fs -D - -o /dev/null -H 'X-CSRF: 1' -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"a benchmark password"}' \
    "http://127.0.0.1:$GW_PORT/auth/login" |
    awk 'tolower($1)=="set-cookie:" { sub(/\r$/, ""); split($2, a, ";"); print a[1] }'
}
COOKIE="$(login_cookie)"
[ -n "$COOKIE" ] || { echo "login failed" >&2; exit 1; }
curl -fs -o /dev/null -H "Cookie: $COOKIE" -H 'X-CSRF: 1' "http://127.0.0.1:$GW_PORT/api/me"

# wrk output → "rps p50_ms p99_ms failed", failed counting non-2xx answers and timeouts (a
# request that timed out is missing from wrk's latencies, so its p99 would read low).
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 }; printf "%.3f", v }'; }
parse_wrk() { # file
  local rps p50 p99 bad
  rps="$(awk '/^Requests\/sec:/ {print $2}' "$1")"
  p50="$(awk '$1=="50%" {print $2}' "$1" | to_ms)"
  p99="$(awk '$1=="99%" {print $2}' "$1" | to_ms)"
  bad="$(awk '/Non-2xx or 3xx responses:/ {n+=$5} /Socket errors:/ {n+=$NF} END {print n+0}' "$1")"
  echo "${rps:-0} ${p50:-0} ${p99:-0} ${bad:-0}"
}
run_wrk() { # name connections seconds url [wrk args...]
  local name="$1" c="$2" d="$3" url="$4"; shift 4
  local t=$(( c < CORES ? c : CORES ))
  # The URL goes before the extra options: a script's arguments follow `--`, last.
  wrk -t"$t" -c"$c" -d"${d}s" --latency "$url" "$@" > "$WORK/$name.wrk" 2>&1
  parse_wrk "$WORK/$name.wrk"
}
median() { sort -g | awk '{ a[NR]=$1 } END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }

echo "proxy rounds: $ROUNDS × $ROUND_SECONDS s per target, $CONNECTIONS connections…" >&2
declare -A R
for round in $(seq 1 "$ROUNDS"); do
  for target in direct nginx bffgate untracked; do
    case $target in
      direct) out="$(run_wrk "$target$round" "$CONNECTIONS" "$ROUND_SECONDS" "http://127.0.0.1:$UP_PORT/api/me")" ;;
      nginx) out="$(run_wrk "$target$round" "$CONNECTIONS" "$ROUND_SECONDS" "http://127.0.0.1:$NGINX_PORT/api/me")" ;;
      bffgate) out="$(run_wrk "$target$round" "$CONNECTIONS" "$ROUND_SECONDS" "http://127.0.0.1:$GW_PORT/api/me" \
                 -H "Cookie: $COOKIE" -H 'X-CSRF: 1')" ;;
      untracked) out="$(run_wrk "$target$round" "$CONNECTIONS" "$ROUND_SECONDS" "http://127.0.0.1:$GWU_PORT/api/me" \
                 -H "Cookie: $COOKIE" -H 'X-CSRF: 1')" ;;
    esac
    read -r rps p50 p99 bad <<<"$out"
    [ "$bad" = 0 ] || { echo "$target: $bad non-2xx answers or timeouts" >&2; exit 1; }
    R[$target.rps]+="$rps "; R[$target.p50]+="$p50 "; R[$target.p99]+="$p99 "
    echo "  round $round $target: $rps req/s, p50 $p50 ms, p99 $p99 ms" >&2
  done
done
med() { tr ' ' '\n' <<<"${R[$1]}" | grep -v '^$' | median; }

# Revocation delay: a logout on the first instance, seen by the second.
echo "revocation delay across two instances ($REVOCATIONS logouts)…" >&2
read -r REV_P50 REV_P99 REV_MAX REV_FIRST <<<"$("$TOOL" revocation "http://127.0.0.1:$GW_PORT" \
  "http://127.0.0.1:$GW2_PORT" bench@example.com 'a benchmark password' "$REVOCATIONS")"
[ -n "$REV_FIRST" ] || { echo "revocation: no measurement" >&2; exit 1; }

# Refresh rotation: CHAINS independent sessions, each presenting the cookie its previous
# refresh returned (one wrk connection per chain).
rotation_round() { # name seconds
  : > "$WORK/chains.txt"
  for _ in $(seq 1 "$CHAINS"); do login_cookie >> "$WORK/chains.txt"; done
  run_wrk "$1" "$CHAINS" "$2" "http://127.0.0.1:$GW_PORT/auth/refresh" \
    -t"$CHAINS" -s bench/rotate.lua -- "$WORK/chains.txt"
}
flush_redis
printf 'a benchmark password' | "$BIN" user add bench@example.com --password-stdin >/dev/null
"$TOOL" fill "$REDIS_URL" bench: 1000 2>/dev/null
echo "rotation with 1,000 live families…" >&2
read -r ROT_RPS ROT_P50 ROT_P99 ROT_BAD <<<"$(rotation_round rot1k "$ROUND_SECONDS")"
[ "$ROT_BAD" = 0 ] || { echo "rotation: $ROT_BAD non-2xx answers" >&2; exit 1; }
# Peak memory under the request loads (the 1 + CHAINS logins so far already used one
# Argon2 working memory).
RSS_LOAD_KB="$(awk '/VmHWM/ {print $2}' /proc/$GW_PID/status)"

# Logins beside one Argon2 verification, and /healthz (probed 100 times a second, as a load
# balancer would) while logins saturate the CPU.
ARGON_MS="$("$TOOL" argon2 20)"
echo "login storm…" >&2
"$TOOL" probe "http://127.0.0.1:$GW_PORT/healthz" "$ROUND_SECONDS" 100 > "$WORK/healthz.txt" &
HZ=$!
read -r LOGIN_RPS LOGIN_P50 LOGIN_P99 LOGIN_BAD <<<"$(run_wrk login 8 "$ROUND_SECONDS" \
  "http://127.0.0.1:$GW_PORT/auth/login" -s bench/login.lua)"
wait "$HZ"
read -r HZ_P50 HZ_P99 HZ_MAX < "$WORK/healthz.txt"
[ "$LOGIN_BAD" = 0 ] || { echo "login: $LOGIN_BAD non-2xx answers" >&2; exit 1; }
RSS_KB="$(awk '/VmHWM/ {print $2}' /proc/$GW_PID/status)"

# Redis memory per family.
echo "filling $MEMORY_FAMILIES families…" >&2
flush_redis
BEFORE="$(redis_memory)"
"$TOOL" fill "$REDIS_URL" bench: "$MEMORY_FAMILIES" 2>/dev/null
AFTER="$(redis_memory)"
BYTES_PER_FAMILY=$(( (AFTER - BEFORE) / MEMORY_FAMILIES ))

# Scale: rotation p99 with SCALE_FAMILIES live families.
echo "filling to $SCALE_FAMILIES families…" >&2
printf 'a benchmark password' | "$BIN" user add bench@example.com --password-stdin >/dev/null
"$TOOL" fill "$REDIS_URL" bench: $(( SCALE_FAMILIES - MEMORY_FAMILIES )) 2>/dev/null
echo "rotation with $SCALE_FAMILIES live families…" >&2
read -r ROTM_RPS ROTM_P50 ROTM_P99 ROTM_BAD <<<"$(rotation_round rot1m "$ROUND_SECONDS")"
[ "$ROTM_BAD" = 0 ] || { echo "rotation at scale: $ROTM_BAD non-2xx answers" >&2; exit 1; }

# The table.
D_RPS=$(med direct.rps); D_P50=$(med direct.p50); D_P99=$(med direct.p99)
N_RPS=$(med nginx.rps); N_P50=$(med nginx.p50); N_P99=$(med nginx.p99)
B_RPS=$(med bffgate.rps); B_P50=$(med bffgate.p50); B_P99=$(med bffgate.p99)
U_RPS=$(med untracked.rps); U_P50=$(med untracked.p50); U_P99=$(med untracked.p99)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'; }
verdict() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**missed**"; }
LOGIN_CEILING=$(awk -v c="$CORES" -v ms="$ARGON_MS" 'BEGIN { printf "%.1f", c * 1000 / ms }')
{
  echo "# bffgate benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(redis-server --version | awk '{print $3}') ($REDIS_MODE, ${#REDIS_PORTS[@]} node(s)), $("$NGINX" -v 2>&1 | sed 's/.*: //'), wrk $CONNECTIONS connections, $ROUNDS rounds × $ROUND_SECONDS s alternating (medians)."
  echo
  echo "| authenticated proxied GET | requests/s | p50 ms | p99 ms |"
  echo "| --- | --- | --- | --- |"
  echo "| direct upstream | $D_RPS | $D_P50 | $D_P99 |"
  echo "| nginx proxy (no auth) | $N_RPS | $N_P50 | $N_P99 |"
  echo "| bffgate (cookie open + tracked family check + Bearer) | $B_RPS | $B_P50 | $B_P99 |"
  echo "| bffgate, \`track_liveness = false\` (a Redis round trip per request) | $U_RPS | $U_P50 | $U_P99 |"
  echo "| bffgate ÷ nginx | $(ratio "$B_RPS" "$N_RPS") | $(ratio "$B_P50" "$N_P50") | $(ratio "$B_P99" "$N_P99") |"
  echo "| bffgate ÷ direct | $(ratio "$B_RPS" "$D_RPS") | $(ratio "$B_P50" "$D_P50") | $(ratio "$B_P99" "$D_P99") |"
  echo
  echo "| measure | value | target | |"
  echo "| --- | --- | --- | --- |"
  echo "| proxied GET requests/s ÷ nginx | $(ratio "$B_RPS" "$N_RPS") | ≥ 0.6 (stretch 0.8) | $(verdict "$B_RPS >= 0.6 * $N_RPS") |"
  echo "| proxied GET p99 ÷ nginx | $(ratio "$B_P99" "$N_P99") | ≤ 1.5 | $(verdict "$B_P99 <= 1.5 * $N_P99") |"
  echo "| proxied GET requests/s, tracked ÷ untracked | $(ratio "$B_RPS" "$U_RPS") | | |"
  echo "| rotations/s ($CHAINS chains, 1,000 families) | $ROT_RPS (p50 $ROT_P50 ms, p99 $ROT_P99 ms) | ≥ 25,000, p99 < 10 ms | $(verdict "$ROT_RPS >= 25000 && $ROT_P99 < 10") |"
  echo "| revocation seen by another instance: logout answer → its 401 ($REVOCATIONS logouts) | p50 $REV_P50 ms, p99 $REV_P99 ms, max $REV_MAX ms; $REV_FIRST of $REVOCATIONS at the first request | p99 ≤ 10 ms | $(verdict "$REV_P99 <= 10") |"
  echo "| logins/s (8 connections) | $LOGIN_RPS (p50 $LOGIN_P50 ms) | ≥ 80 % of $CORES ÷ $ARGON_MS ms = $LOGIN_CEILING | $(verdict "$LOGIN_RPS >= 0.8 * $LOGIN_CEILING") |"
  echo "| one Argon2id verification | $ARGON_MS ms | | |"
  echo "| /healthz p99 during the login storm (100 probes/s) | $HZ_P99 ms (p50 $HZ_P50, max $HZ_MAX) | < 10 ms | $(verdict "$HZ_P99 < 10") |"
  echo "| gateway peak RSS under proxy and rotation load (incl. one Argon2 memory) | $(( RSS_LOAD_KB / 1024 )) MiB | < 64 MiB | $(verdict "$RSS_LOAD_KB < 65536") |"
  echo "| gateway peak RSS after the login storm too (Argon2: 19 MiB per core) | $(( RSS_KB / 1024 )) MiB | | |"
  echo "| Redis memory per family ($MEMORY_FAMILIES families) | $BYTES_PER_FAMILY bytes | ≤ 1,024 | $(verdict "$BYTES_PER_FAMILY <= 1024") |"
  echo "| rotation p99, 1,000 → $SCALE_FAMILIES families | $ROT_P99 → $ROTM_P99 ms ($ROTM_RPS/s) | ≤ 1.25× | $(verdict "$ROTM_P99 <= 1.25 * $ROT_P99") |"
} | tee "$OUT"
