#!/usr/bin/env bash
# Fuzzes every target for SECONDS (default 600), one after another, pinned
# to core 0. Logs go to fuzz/logs/<target>.log.
set -uo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(credentials token login_form phc); fi
mkdir -p logs
export RUSTC_BOOTSTRAP=1
cargo fuzz build || exit 1
for target in "${targets[@]}"; do
  echo "== $target: taskset -c 0 cargo fuzz run $target -- -max_total_time=$seconds -timeout=10"
  taskset -c 0 cargo fuzz run "$target" -- -max_total_time="$seconds" -timeout=10 \
    >"logs/$target.log" 2>&1
  echo "exit $?"
  tail -n 3 "logs/$target.log"
done
