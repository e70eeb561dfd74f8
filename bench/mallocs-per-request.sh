#!/usr/bin/env bash
# Allocations per response on the app's runtime thread (`server`) of one
# load bench target: a uprobe on glibc's malloc and one on hyper's
# response encoder (once per response), counted together over 2 s in the
# middle of a 6 s run, so the ratio is of the same window whatever the
# probes do to the throughput. Needs root for perf. Build first:
# cargo build --release -p bench --bin loadbench
#
#   bench/mallocs-per-request.sh "session/Redis" counter
#   bench/mallocs-per-request.sh "raw redis-rs/Redis" read
set -euo pipefail
target=$1 route=$2
bin=$(realpath "${LOADBENCH:-"$(dirname "$0")/../target/release/loadbench"}")
libc=${LIBC:-/lib/x86_64-linux-gnu/libc.so.6}
perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc ' || perf probe -q -x "$libc" malloc
# hyper's `Server::encode`, by its file offset (perf's raw addresses are
# offsets in the file; `nm` gives addresses in memory).
symbol=$(nm "$bin" | grep 'Http1Transaction' | grep '6encode' | grep 'role..Server' | head -n 1)
address=$((0x${symbol%% *}))
shift_of=$(readelf -lW "$bin" | awk '$1 == "LOAD" && / E / {print $3 " " $2; exit}')
offset=$((address - ${shift_of% *} + ${shift_of#* }))
perf probe -d 'probe_lb:responses' >/dev/null 2>&1 || true
perf probe -q -x "$bin" -a "probe_lb:responses=$(printf '0x%x' "$offset")"
out=$(mktemp) stat=$(mktemp)
BENCH_DBS=${BENCH_DBS:-redis} BENCH_ROUTES=$route BENCH_SECONDS=6 BENCH_ROUNDS=1 \
  BENCH_TARGETS="$target" "$bin" >"$out" 2>&1 &
pid=$!
sleep 2.5
tid=$(for task in /proc/$pid/task/*; do
  [ "$(cat "$task/comm")" = server ] && basename "$task"; done | head -n 1)
perf stat -x, -e probe_libc:malloc,probe_lb:responses -t "$tid" -- sleep 2 2>"$stat"
wait "$pid"
perf probe -d 'probe_lb:responses' >/dev/null 2>&1 || true
mallocs=$(grep malloc "$stat" | cut -d, -f1)
responses=$(grep responses "$stat" | cut -d, -f1)
awk -v m="$mallocs" -v r="$responses" 'BEGIN {printf "%.2f mallocs/response (%d over %d responses)\n", m / r, m, r}'
rm -f "$out" "$stat"
