#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS (default 60) each, one after the other,
# and prints the executions per target.
#
#   bench/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target reads
# the committed seeds in fuzz/corpus/TARGET and grows its corpus in fuzz/corpus-run/TARGET
# (ignored by git). A crash leaves its input in fuzz/artifacts/TARGET/ and makes the script
# exit non-zero after the other targets have run; reproduce it with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`.
#
# FUZZ_SANITIZER (default none: the code is safe Rust, whose bugs are panics, which
# libFuzzer catches without a sanitizer, at several times the speed) may be `address`.
# FUZZ_JOBS (default 1) runs that many fuzzing processes per target (their logs in
# fuzz/fuzz-N.log).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
parallel=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
  parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi

cargo +nightly fuzz build -s "$sanitizer" -O 2>&1 | tail -1
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
printf '%-22s %12s %10s %8s %s\n' target executions exec/s corpus result
for target in "${targets[@]}"; do
  mkdir -p "corpus-run/$target" "corpus/$target"
  log=$(mktemp)
  # -timeout: one input taking over 10 s is a hang, reported as a crash.
  if cargo +nightly fuzz run -s "$sanitizer" -O "$target" "corpus-run/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      "${parallel[@]}" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$target")
  fi
  stat() { { grep -ho "stat::$1: *[0-9]*" "$log" fuzz-*.log 2>/dev/null || true; } | awk '{s+=$2} END {print s+0}'; }
  runs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  corpus=$(ls "corpus-run/$target" | wc -l)
  printf '%-22s %12s %10s %8s %s\n' "$target" "$runs" "$rate" "$corpus" "$result"
  if [ "$result" = FAILED ]; then
    { grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" || tail -5 "$log"; } | head -20 | sed 's/^/    /'
  fi
  rm -f "$log" fuzz-*.log
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
