#!/usr/bin/env bash
# Allocations per request on the app's runtime thread (`server`) of one
# load bench target: a uprobe on glibc's malloc, counted over 3 s in the
# middle of a 6 s run, over the run's req/s (so a run whose throughput
# swings reads as noise). Needs root for perf. Build first:
# cargo build --release -p bench --bin loadbench
#
#   bench/mallocs-per-request.sh "session/Redis" counter
#   bench/mallocs-per-request.sh "raw redis-rs/Redis" read
set -euo pipefail
target=$1 route=$2
bin=${LOADBENCH:-"$(dirname "$0")/../target/release/loadbench"}
libc=${LIBC:-/lib/x86_64-linux-gnu/libc.so.6}
perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc ' || perf probe -q -x "$libc" malloc
out=$(mktemp) stat=$(mktemp)
BENCH_DBS=${BENCH_DBS:-redis} BENCH_ROUTES=$route BENCH_SECONDS=6 BENCH_ROUNDS=1 \
  BENCH_TARGETS="$target" "$bin" >"$out" 2>&1 &
pid=$!
sleep 2.5
tid=$(for task in /proc/$pid/task/*; do
  [ "$(cat "$task/comm")" = server ] && basename "$task"; done | head -n 1)
perf stat -x, -e probe_libc:malloc -t "$tid" -- sleep 3 2>"$stat"
wait "$pid"
rps=$(grep 'req/s' "$out" | grep -v '^|' | tail -n 1 | sed 's/.* \([0-9]*\) req\/s.*/\1/')
mallocs=$(cut -d, -f1 "$stat" | head -n 1)
awk -v m="$mallocs" -v rps="$rps" 'BEGIN {printf "%.1f mallocs/req (%d over 3 s, %d req/s)\n", m / (rps * 3), m, rps}'
rm -f "$out" "$stat"
