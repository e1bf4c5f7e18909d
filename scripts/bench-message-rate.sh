#!/usr/bin/env bash
# Device message rate of `mdmsim fleet` against the reference server over HTTP on loopback,
# next to wrk's request rate POSTing a package 1 to the same server, measured in the same run.
#
#   scripts/bench-message-rate.sh [DEVICES] [SECONDS]      (defaults: 20000 devices, 15 s of wrk)
#
# Needs wrk (Debian: apt-get install wrk). Builds the release binary. Prints both rates and
# their ratio; the server, wrk and the fleet share this machine's cores, as they would on one
# load-test host.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-20000}
secs=${2:-15}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 2; }
cargo build --release --locked --bin mdmsim >/dev/null
bin=target/release/mdmsim
state=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$bin" server --http --listen "127.0.0.1:$port" --auth none --state "$state" >"$state/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$state"' EXIT
url="http://127.0.0.1:$port/ManagementServer/MDM.svc"
for _ in $(seq 50); do grep -q listening "$state/server.log" && break; sleep 0.1; done
cat >"$state/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/vnd.syncml.dm+xml"
local f = io.open("fixtures/syncml/client-package1.xml", "rb")
wrk.body = f:read("*a")
f:close()
LUA
wrk_rate=$(wrk -t1 -c64 -d"${secs}s" -s "$state/post.lua" "$url" | awk '/Requests\/sec/ {print $2}')
json=$("$bin" fleet --devices "$devices" --server "$url" --duration 2h --max-in-flight 64 --json)
python3 - "$wrk_rate" "$json" <<'PY'
import json, sys
wrk = float(sys.argv[1]); r = json.loads(sys.argv[2])
rate = r["messages"] / r["wall_s"]
print(f"wrk (package 1 POSTs, 64 connections): {wrk:,.0f} requests/s")
print(f"mdmsim fleet ({r['devices']} devices, {r['sessions']} sessions, {r['failed']} failed): "
      f"{r['messages']:,} messages in {r['wall_s']:.1f} s = {rate:,.0f} messages/s")
print(f"ratio: {rate / wrk:.2f}")
PY
