#!/usr/bin/env bash
# Where the time goes through the switch: a sampled time profile (perf, cpu-clock: a
# software clock, so it works where the VM exposes no cycle counter) of the switch
# benchmark's fixed-count mode, by function, with the hottest instructions of the top one.
# Complements perf/callgrind.sh, which counts instructions; this shows time, stalls included.
#
# Usage: perf/profile.sh [switch-bench args, e.g. --ports 16 --macs 256]
# Writes results/profile-switch.txt (or profile-switch-<tag>.txt when FERRITE_TAG is set).
# Needs perf (Debian package linux-perf) and permission to sample (root, or
# kernel.perf_event_paranoid <= 1).
set -euo pipefail
. "$(dirname "$0")/switch-env.sh" perf

N=${N:-300000000}
CORE=${CORE:-1}

start=$(date +%s.%N)
if ! perf record -q -e cpu-clock -F 10000 -o "$out/perf.data" -- \
  taskset -c "$CORE" "$bin" --no-pin --count "$N" "$@" >"$out/run.log" 2>"$out/perf.log"; then
  echo "perf record failed:" >&2
  cat "$out/perf.log" >&2
  exit 1
fi
end=$(date +%s.%N)

tag=${FERRITE_TAG:+-$FERRITE_TAG}
result="results/profile-switch$tag.txt"
mkdir -p results
{
  echo "# Where the time goes through the switch (perf record -e cpu-clock)"
  echo "command: perf/profile.sh $*"
  echo "case: switch --count $N ${*:-(64 B, batch 32, 2 ports, zero-copy)}, pinned to core $CORE"
  machine_line
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "$(cat "$out/run.log"); $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f s under perf, warm-up and setup included", e - s }')"
  echo
  echo "## Share of the samples, by function"
  report() { perf report -i "$out/perf.data" --no-children -F overhead,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' || true; }
  report | awk '$1 + 0 >= 0.3 { print }' | sed 's/ *$//'
  top=$(report | head -1 | sed -E 's/^ *[0-9.]+% +\[\.\] +//; s/ +$//')
  echo
  echo "## Hottest instructions of $top (percent of its samples)"
  echo "(a sample lands on the instruction after the one that stalled, often the first user of a load)"
  perf annotate -i "$out/perf.data" --stdio -s "$top" 2>/dev/null |
    { grep -E '^ +[0-9]+\.[0-9]+ +:' || true; } | sort -rn | head -12 | sed 's/ *$//'
} >"$result"
cat "$result"
