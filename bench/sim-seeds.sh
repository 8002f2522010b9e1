#!/usr/bin/env bash
# Runs a rotating range of simulation seeds (different every day), on top of
# the fixed range CI runs. Usage: bench/sim-seeds.sh [COUNT]
# A violation prints the seed and the command that replays it; add that seed
# to actors/sim/tests/regressions.rs once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10000}
day=$(( $(date +%s) / 86400 ))
start=$(( 100000 + (day % 1000) * count ))
echo "seeds ${start}..$((start + count)) (rotating by day)"
cargo run --release -p synod-sim --bin synod-sim -- --seeds "${start}..$((start + count))"
