#!/usr/bin/env bash
# Prints the milestones and the measured figures of a Ferrite Xen test serial log:
#   attach time of each app (grant + map + handshake, the app's clock, from its ATTACH line),
#   the server's share of it (xenstore reads, map, bind + port),
#   event-channel kicks per 1000 frames forwarded through each app's port: server -> app
#   (the server logs its counters when an app leaves or the server stops) and app -> server
#   (ferrite-bulk's device counters at exit),
#   restart to first forwarded frame (dom0: SIGKILL to restart, plus the new server's own
#   start to its first forwarded frame).
L=${1:-/var/tmp/ferrite-xen/serial.log}
grep -aE 'DOM0-INIT|toolstack up|SUITE|SERVER-|creating app|domains created|APPS-ATTACHED|ATTACH|xen attach:|xen app connected|PING|HTTP PASS|APP-TO-APP|VICTIM|its process is gone|APP-DEATH|RESTART PASS|REATTACH|first frame forwarded|doorbell kicks|sha256 |FERRITE-XEN|refused|FAIL|panic|segfault' "$L" |
  grep -av '^ *[0-9.]* {"role"'
echo "--- ferrite stats before the server stops"
grep -a 'STATS ' "$L" | sed 's/^ *[0-9.]* STATS //'
echo "--- figures"
grep -aoE '[a-z]+: ATTACH [0-9.]+ ms \(.*' "$L" | sed 's/^/attach (app clock, from its start: devices and xenstore opened, grant, map, handshake): /'
grep -aoE '[a-z]+: xenstore handshake [0-9.]+ ms:.*' "$L" | sed 's/^/  /'
grep -aoE 'xen app connected in [0-9.]+ ms: .* (domain=[0-9]+ app=[a-z]+)' "$L" | sed 's/^/  server: /'
grep -aE 'app detached: .*doorbell kicks' "$L" |
  sed -E 's/.*frames to the app ([0-9]+), from the app ([0-9]+), doorbell kicks ([0-9]+) \(([0-9.]+) per 1000.* app=([a-z]+).*/kicks server -> \5: \3 for \1 + \2 frames = \4 per 1000 frames forwarded/'
grep -aoE '[a-z]+: leaving: .*per 1000 frames\)' "$L" |
  sed -E 's/([a-z]+): leaving: frames received ([0-9]+), sent ([0-9]+), doorbell kicks to the server ([0-9]+) \(([0-9.]+) per 1000.*/kicks \1 -> server: \4 for \2 + \3 frames = \5 per 1000 frames/'
kill=$(grep -am1 'SERVER-KILLED' "$L" | sed -E 's/.*T\+([0-9.]+).*/\1/')
rest=$(grep -am1 'SERVER-RESTARTED' "$L" | sed -E 's/.*T\+([0-9.]+).*/\1/')
if [ -n "$kill" ] && [ -n "$rest" ]; then
  # the second "first frame forwarded" is the restarted server's (ms since its start)
  ms=$(grep -a 'first frame forwarded' "$L" | sed -n 2p | sed -E 's/.*ms=([0-9.]+).*/\1/')
  [ -n "$ms" ] && printf 'restart to first forwarded frame: %.0f ms (kill -9 to restart %.0f ms on the dom0 clock + new server start to first frame %.0f ms)\n' \
    "$(echo "($rest - $kill) * 1000 + $ms" | bc)" "$(echo "($rest - $kill) * 1000" | bc)" "$ms"
fi
