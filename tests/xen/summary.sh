#!/usr/bin/env bash
# Prints the milestones and measured figures of a Ferrite Xen test serial log.
L=${1:-/var/tmp/ferrite-xen/serial.log}
grep -E 'DOM0-INIT|toolstack up|SUITE|creating app|domains created|granted|ATTACH|CONNECTED|FIRST-FORWARD|FWD |SERVER-|SERVER-GONE|REATTACH|RESULT|apps finished|FERRITE-XEN|refused|FAIL|panic' "$L"
kill=$(grep -m1 'SERVER-KILLED' "$L" | sed -E 's/.*T\+([0-9.]+).*/\1/')
if [ -n "$kill" ]; then
  first=$(awk -v k="$kill" '/\[server +[0-9.]+\] FIRST-FORWARD/ { t=$0; sub(/.*\[server +/, "", t); sub(/\].*/, "", t); if (t+0 > k+0) { print t; exit } }' "$L")
  [ -n "$first" ] && printf 'restart to first forwarded frame: %.0f ms (dom0 clock: killed at %s, first frame at %s)\n' \
    "$(echo "($first - $kill) * 1000" | bc)" "$kill" "$first"
fi
