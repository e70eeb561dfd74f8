#!/usr/bin/env bash
# CPU per request of one load bench target, per process, user and kernel
# apart: the app's runtime thread (`server`), the load generator and Redis,
# from /proc over 3 s in the middle of a 6 s run. Build first:
# cargo build --release -p bench --bin loadbench
#
#   bench/cpu-per-request.sh "raw redis-rs/Redis" counter
#   bench/cpu-per-request.sh "session+client cache/Redis" read
#   BENCH_DBS=redis_cluster REDIS_PORTS="7000 7001 7002 7003 7004 7005" \
#     bench/cpu-per-request.sh "session/Redis Cluster" read
#
# `REDIS_PORTS` (default 6379): the Redis servers whose time is summed as
# `redis` (on Cluster, masters and replicas: replication is part of a write).
set -euo pipefail
target=$1 route=$2
bin=${LOADBENCH:-"$(dirname "$0")/../target/release/loadbench"}
out=$(mktemp)
BENCH_DBS=${BENCH_DBS:-redis} BENCH_ROUTES=$route BENCH_SECONDS=6 BENCH_ROUNDS=1 \
  BENCH_TARGETS="$target" "$bin" >"$out" 2>&1 &
pid=$!
sleep 2.5
redis=
for port in ${REDIS_PORTS:-6379}; do
  server=$(pgrep -f "redis-server.*:$port" | head -n 1) || true
  [ -n "$server" ] || { echo "no redis-server on port $port" >&2; kill "$pid"; exit 1; }
  redis="$redis $server"
done
snap() { # name, user ticks, kernel ticks: per thread name, and Redis's
  for task in /proc/$pid/task/*; do
    echo "$(cat "$task/comm") $(awk '{print $14, $15}' "$task/stat")"
  done | awk '{u[$1] += $2; s[$1] += $3} END {for (n in u) print n, u[n], s[n]}'
  for server in $redis; do awk '{print "redis", $14, $15}' "/proc/$server/stat"; done |
    awk '{u += $2; s += $3} END {print "redis", u, s}'
}
before=$(snap | sort); sleep 3; after=$(snap | sort)
wait "$pid"
rps=$(grep 'req/s' "$out" | grep -v '^|' | tail -n 1 | sed 's/.* \([0-9]*\) req\/s.*/\1/')
ticks=$(getconf CLK_TCK)
join <(echo "$before") <(echo "$after") | awk -v rps="$rps" -v hz="$ticks" '{
  user = ($4 - $2) / hz / 3; kernel = ($5 - $3) / hz / 3
  printf "%-12s %5.2f cores %7.1f us/req (user %5.1f, kernel %5.1f)\n", $1, user + kernel,
    (user + kernel) * 1e6 / rps, user * 1e6 / rps, kernel * 1e6 / rps}'
echo "req/s: $rps"
rm -f "$out"
