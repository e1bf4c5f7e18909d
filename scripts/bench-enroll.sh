#!/usr/bin/env bash
# Enrollment at scale: DEVICES devices enroll through MS-MDE2 against the reference server
# (`mdmsim server`, HTTPS with its own CA, OnPremise user demo@mdmsim.test) on loopback, then
# each runs its first session over mTLS with its certificate. Prints the enrollment figures of
# `mdmsim fleet --discovery ... --json` and the process figures.
#
#   scripts/bench-enroll.sh [DEVICES] [EXTRA FLEET FLAGS...]      (default: 10000 devices)
#
# Builds the release binary. The server and the fleet share this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-10000}
shift || true
cargo build --release --locked --bin mdmsim >/dev/null
bin=target/release/mdmsim
state=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$bin" server --listen "127.0.0.1:$port" --state "$state" >"$state/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 100); do grep -q listening "$state/server.log" && break; sleep 0.1; done
json=$("$bin" fleet --devices "$devices" --discovery "https://127.0.0.1:$port/EnrollmentServer/Discovery.svc" \
    --email demo@mdmsim.test --password demo --ca-cert "$state/ca.pem" --duration 10m --json "$@")
python3 - "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); e = r["enrollment"]; l = r["latency_ms"]["enroll"]
print(f"enrolled {e['enrolled']} of {e['enrolled'] + e['failed']} in {e['wall_s']:.1f} s wall: "
      f"{e['per_s']:,.0f} per second; {e['keys_generated']} keys generated")
print(f"enrollment latency ms: p50 {l['p50']:.0f}, p99 {l['p99']:.0f}, max {l['max']:.0f}")
print(f"then {r['sessions']} sessions ({r['failed']} failed) in {r['wall_s']:.1f} s; "
      f"RSS {r['rss_devices_bytes'] / 2**20:.0f} MiB with the devices enrolled, "
      f"{r['rss_after_bytes'] / 2**20:.0f} MiB after their sessions")
PY
