#!/usr/bin/env bash
# Instruction counts of the gateway's hot paths under callgrind (stable on a busy machine,
# unlike wall time): a proxied GET and a refresh rotation.
#
#   bash bench/profile.sh [get|refresh] [REQUESTS]    # prints the top functions, inclusive
#
# Builds the release binary, starts its own redis-server and a small nginx upstream on free
# loopback ports, runs `bffgate serve` under valgrind --tool=callgrind, sends REQUESTS
# (default 2000) requests with one connection, and annotates; the profile is kept in
# target/callgrind.<get|refresh>.out for callgrind_annotate. Needs valgrind (installed with
# apt-get when missing). The set-up is bench/one-gateway.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-get}"; N="${2:-2000}"
command -v valgrind >/dev/null || { apt-get update -q && apt-get install -y -q valgrind; }
. bench/one-gateway.sh
start_gateway valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out"
COOKIE="$(login)"
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
OUT="target/callgrind.$WHAT.out"
cp "$(ls -t "$WORK"/callgrind.out.* | head -1)" "$OUT"
TOTAL="$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')"
echo "$WHAT: $TOTAL instructions for $N requests: $(( TOTAL / N )) per request ($OUT)"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | sed -n '1,200p' | grep -v '^--' | head -${TOP:-60}
