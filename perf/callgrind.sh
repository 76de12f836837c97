#!/usr/bin/env bash
# Instructions per packet through the switch (64 B frames, batch 32, zero-copy, 2 sim ports
# unless other `switch` bench arguments are given), counted with valgrind's callgrind.
#
# Two runs forward N1 and N2 packets; the difference of their instruction counts divided by
# N2 - N1 cancels setup and warm-up. A per-packet breakdown by function, from the same two
# runs, is written with the result.
#
# Usage: perf/callgrind.sh [extra switch-bench args, e.g. --copy or --ports 16 --macs 256]
# Writes results/callgrind-switch.txt (or callgrind-switch-<tag>.txt when FERRITE_TAG is set).
set -euo pipefail
. "$(dirname "$0")/switch-env.sh" valgrind

N1=${N1:-200000}
N2=${N2:-1200000}

run() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" --dump-instr=yes \
    "$bin" --no-pin --count "$1" "${@:2}" 2>"$out/log.$1" >/dev/null
  grep -Eo 'Collected : [0-9]+' "$out/log.$1" | grep -Eo '[0-9]+$'
}

i1=$(run "$N1" "$@")
i2=$(run "$N2" "$@")
per=$(awk -v a="$i1" -v b="$i2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.1f", (b - a) / (n2 - n1) }')

tag=${FERRITE_TAG:+-$FERRITE_TAG}
result="results/callgrind-switch$tag.txt"
mkdir -p results
{
  echo "# Switch instructions per packet (valgrind --tool=callgrind)"
  echo "command: perf/callgrind.sh $*"
  echo "case: switch --count N ${*:-(64 B, batch 32, 2 ports, zero-copy)}"
  machine_line
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "valgrind: $(valgrind --version)"
  echo "runs: $N1 packets -> $i1 instructions; $N2 packets -> $i2 instructions"
  echo "instructions per packet: $per"
  echo
  echo "## Where the instructions go: per packet, by function (difference of the two runs)"
  python3 - "$out/cg.$N1" "$out/cg.$N2" "$N1" "$N2" <<'PY'
import collections, re, subprocess, sys
def load(f):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", f],
                         capture_output=True, text=True).stdout
    d = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[.*\]$", "", m.group(2))
        name = name.split(":", 1)[1] if ":" in name else name
        d[name] += int(m.group(1).replace(",", ""))
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
n = int(sys.argv[4]) - int(sys.argv[3])
rows = sorted(((b[k] - a[k]) / n, k) for k in set(a) | set(b))
for v, k in reversed(rows):
    if abs(v) >= 0.05:
        print(f"{v:8.2f}  {k[:140]}")
PY
} >"$result"
cat "$result"
