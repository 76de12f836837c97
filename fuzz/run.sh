#!/bin/sh
# A coverage-guided campaign on one harness: fuzz/run.sh TARGET SECONDS
#
# Builds fuzz/src/bin/afl.rs with `cargo afl` (AFL++ instrumentation, overflow checks and
# debug assertions on) in its own target directory, runs afl-fuzz on TARGET for SECONDS
# seconds starting from fuzz/corpus/TARGET/, and prints executions, rate, crashes and edge
# coverage from afl's fuzzer_stats. Findings stay in target/afl/TARGET/default/{crashes,queue}.
# Needs `cargo install cargo-afl` and `cargo afl config --build` once.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS" >&2
    exit 2
fi
target=$1
secs=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -d "fuzz/corpus/$target" ] || { echo "no corpus fuzz/corpus/$target" >&2; exit 2; }
export CARGO_TARGET_DIR="$root/target/afl-build"
nice -n 10 cargo afl build --release -p fuzz --features afl --bin afl
bin="$CARGO_TARGET_DIR/release/afl"
out="$root/target/afl/$target"
rm -rf "$out"
mkdir -p "$out"
AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_NO_AFFINITY=1 AFL_SKIP_CRASHES=1 \
    nice -n 10 cargo afl fuzz -i "fuzz/corpus/$target" -o "$out" -V "$secs" -- "$bin" "$target" \
    > "$out/afl.log" 2>&1 || { tail -30 "$out/afl.log" >&2; exit 1; }
stats="$out/default/fuzzer_stats"
get() { sed -n "s/^$1 *: *//p" "$stats"; }
crashes=$(ls "$out/default/crashes" 2>/dev/null | grep -vc README || true)
echo "target:        $target"
echo "run_time_s:    $(get run_time)"
echo "executions:    $(get execs_done)"
echo "execs_per_sec: $(get execs_per_sec)"
echo "crashes:       $(get saved_crashes) ($crashes files in $out/default/crashes)"
echo "hangs:         $(get saved_hangs)"
echo "edges_found:   $(get edges_found) of $(get total_edges) ($(get bitmap_cvg))"
echo "corpus_count:  $(get corpus_count)"
echo "stability:     $(get stability)"
