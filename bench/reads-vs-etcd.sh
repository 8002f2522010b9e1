#!/usr/bin/env bash
# Reads and writes side by side with etcd, interleaved on the same machine:
# for each client count and round, `synod-bench cluster` with --op write,
# read (ReadIndex), read-lease and mixed (90% reads), then a fresh 3-node
# etcd (../shared/etcd-bench/run-etcd.sh) filled with the key space and
# measured with put and get-linearizable. Prints the median of the rounds
# per system, op and client count.
#
#   bench/reads-vs-etcd.sh SCRATCH_DIR
#
# Env: CLIENTS ("1 16 256"), RUNS (3), SECS (10), ETCD_BENCH
# (../shared/etcd-bench, built with `cargo build --release` there; needs
# `apt-get install etcd-server etcd-client protobuf-compiler`).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bench/reads-vs-etcd.sh SCRATCH_DIR}
CLIENTS=${CLIENTS:-"1 16 256"}
RUNS=${RUNS:-3}
SECS=${SECS:-10}
ETCD=${ETCD_BENCH:-../shared/etcd-bench}
SYNOD=target/release/synod-bench
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
RES=$DIR/results.txt
: > "$RES"
cargo build --release -q -p synod-bench
trap '"$ETCD/run-etcd.sh" stop "$DIR/etcd" >/dev/null 2>&1 || true' EXIT

for c in $CLIENTS; do
  for r in $(seq "$RUNS"); do
    for op in write read read-lease mixed; do
      mkdir -p "$DIR/synod"
      line=$("$SYNOD" cluster --op "$op" --clients "$c" --seconds "$SECS" --dir "$DIR/synod" | tail -1)
      echo "synod $op $c $line" | tee -a "$RES"
      rm -rf "$DIR/synod"
    done
    "$ETCD/run-etcd.sh" start "$DIR/etcd" >/dev/null
    pids=$(cat "$DIR"/etcd/n*.pid | paste -sd,)
    "$ETCD/target/release/etcd-bench" --op fill >/dev/null 2>&1
    for op in put get-linearizable; do
      line=$("$ETCD/target/release/etcd-bench" --op "$op" --clients "$c" --seconds "$SECS" \
        --etcd-pids "$pids" 2>/dev/null | tail -1)
      echo "etcd $op $c $line" | tee -a "$RES"
    done
    "$ETCD/run-etcd.sh" stop "$DIR/etcd" >/dev/null
    rm -rf "$DIR/etcd"
  done
done

echo "== medians of $RUNS rounds (ops/s or writes/s, p99 us) =="
python3 - "$RES" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    sysname, op, c, rest = line.split(" ", 3)
    rate = float(re.search(r"(?:ops|writes)/s: ([0-9.]+)", rest).group(1))
    p99 = float(re.search(r"p99_us: ([0-9.]+)", rest).group(1))
    rows.setdefault((sysname, op, int(c)), []).append((rate, p99))
for (sysname, op, c), v in sorted(rows.items(), key=lambda k: (k[0][2], k[0][0], k[0][1])):
    rates = sorted(r for r, _ in v)
    p99s = sorted(p for _, p in v)
    print(f"{sysname:5} {op:16} clients {c:3}: {statistics.median(rates):9.0f}/s "
          f"(runs {', '.join(f'{r:.0f}' for r in rates)}), p99 {statistics.median(p99s):.0f} us")
EOF
