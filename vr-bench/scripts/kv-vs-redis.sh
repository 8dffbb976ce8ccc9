#!/usr/bin/env bash
# vr-kv against redis-server, with and without durability, in one run
# (issue 18's benchmark): `redis-benchmark -t set -c 50` against
#
#   redis-server --appendonly yes --appendfsync always  (one process, AOF fsync'd per event-loop turn)
#   vr-kv node --data-dir  x3                           (a write is on 2 of 3 disks before OK)
#   redis-server --save '' --appendonly no              (memory only)
#   vr-kv node (diskless) x3                            (a write is in 2 of 3 memories before OK)
#
# alternating, ROUNDS times, so that a drift in the machine's load shows
# in every column; prints each round and the medians. Data directories go
# under DIR (default target/vr-bench/kv-vs-redis), on the disk measured.
#
# Usage: vr-bench/scripts/kv-vs-redis.sh [ROUNDS] [REQUESTS] [CLIENTS]
# Needs: cargo build --release -p vr-kv; redis-server and redis-benchmark
# (apt-get install -y redis-server redis-tools).
set -euo pipefail
ROUNDS=${1:-3}
REQUESTS=${2:-50000}
CLIENTS=${3:-50}
RUNTIME=${RUNTIME:-tokio}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VRKV=${VRKV:-$ROOT/target/release/vr-kv}
DIR=${DIR:-$ROOT/target/vr-bench/kv-vs-redis}
[ -x "$VRKV" ] || { echo "build vr-kv first: cargo build --release -p vr-kv" >&2; exit 1; }
rm -rf "$DIR"; mkdir -p "$DIR"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Requests per second of `redis-benchmark -t set` against port $1.
bench() {
  redis-benchmark -p "$1" -t set -c "$CLIENTS" -n "$REQUESTS" -r 100000 -d 16 --csv 2>/dev/null \
    | awk -F'","' '/^"SET"/ { gsub(/"/, "", $2); print int($2) }'
}

redis_run() { # $1: extra args
  local p; p=$(port)
  local d="$DIR/redis-$RANDOM"; mkdir -p "$d"
  # shellcheck disable=SC2086
  redis-server --port "$p" --dir "$d" --save '' $1 --daemonize no >/dev/null 2>&1 &
  local pid=$!; PIDS+=("$pid")
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
  bench "$p"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

vrkv_run() { # $1: "durable" or "diskless"
  local vr=() resp=() pids=()
  for i in 0 1 2; do vr+=("127.0.0.1:$(port)"); resp+=("127.0.0.1:$(port)"); done
  local cluster; cluster=$(IFS=,; echo "${vr[*]}")
  local d="$DIR/vrkv-$RANDOM"
  for i in 0 1 2; do
    local extra=()
    [ "$1" = durable ] && extra=(--data-dir "$d/replica-$i")
    VR_LOG=warn "$VRKV" node --cluster "$cluster" --replica "$i" --listen-resp "${resp[$i]}" \
      --runtime "$RUNTIME" "${extra[@]}" >/dev/null 2>>"$DIR/vrkv.log" &
    pids+=($!); PIDS+=($!)
  done
  # The primary of view 0 is replica 0 once the cluster formed.
  local p=${resp[0]##*:}
  for _ in $(seq 200); do
    redis-cli -p "$p" vr.status 2>/dev/null | grep -q "role:primary" && break; sleep 0.05
  done
  bench "$p"
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

echo "redis-benchmark -t set -c $CLIENTS -n $REQUESTS -d 16; vr-kv on $RUNTIME; $(nproc) CPUs; data in $DIR"
printf "%-6s %14s %14s %14s %14s\n" round redis-aof-always vr-kv-durable redis-memory vr-kv-diskless
: > "$DIR/a"; : > "$DIR/b"; : > "$DIR/c"; : > "$DIR/e"
for r in $(seq "$ROUNDS"); do
  a=$(redis_run "--appendonly yes --appendfsync always"); echo "$a" >> "$DIR/a"
  b=$(vrkv_run durable); echo "$b" >> "$DIR/b"
  c=$(redis_run "--appendonly no"); echo "$c" >> "$DIR/c"
  e=$(vrkv_run diskless); echo "$e" >> "$DIR/e"
  printf "%-6s %14s %14s %14s %14s\n" "$r" "$a" "$b" "$c" "$e"
done
ma=$(median < "$DIR/a"); mb=$(median < "$DIR/b"); mc=$(median < "$DIR/c"); me=$(median < "$DIR/e")
printf "%-6s %14s %14s %14s %14s\n" median "$ma" "$mb" "$mc" "$me"
python3 -c "print(f'vr-kv durable / redis AOF always: {$mb/$ma:.2f}x; vr-kv diskless / redis memory: {$me/$mc:.2f}x')"
