#!/usr/bin/env bash
# End-to-end test of the register-level Intel driver on QEMU's emulated 82576 (`-device igb`).
#
# Boots a Debian kernel (TCG, no KVM) with a minimal initramfs: busybox and static Ferrite
# binaries. No kernel NIC driver is loaded in the guest (the initramfs holds none), so the
# device is driven only by the `intel` port through sysfs resource0 and pagemap DMA. The
# guest's NIC is a TAP inside a network namespace this script creates; from there the host
# side pings the guest (1000 packets, 0 loss required).
#
# Scenarios (FERRITE_QEMU_SCENARIOS, default "sysfs vfio rss server"):
#   sysfs   diagnostic responder (ARP, ICMP echo) on the port alone; no IOMMU: BAR0 through
#           sysfs resource0, DMA to physical addresses from pagemap; echo replies are sent
#           from a memfd pool registered for transmit DMA, as an app's pool would be;
#   vfio    the same on q35 with an emulated VT-d IOMMU: BAR0 and DMA mappings through VFIO;
#   rss     the responder with 4 queues: flows from 8 source addresses are spread by RSS;
#           at least two queues must receive, and every ping is answered;
#   server  the Ferrite server with the intel port and two app domains (TCP/UDP echo and
#           HTTP, each its own smoltcp stack): ping 1000, TCP echo, HTTP download with a
#           sha256 check; the app sends 64 KiB TCP frames, which the port takes whole and
#           the device cuts (TSO): the peer's capture holds MSS-sized segments only. No hugepages in this guest: the port's DMA memory is pinned 4 KiB
#           pages translated through pagemap.
#
# Exit status 0 only if every check passed. Root only (namespaces, TAP).
# Environment: FERRITE_QEMU_TIMEOUT (seconds, default 150), FERRITE_QEMU_KEEP=1 keeps the
# work directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tmo=${FERRITE_QEMU_TIMEOUT:-150}
start=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
  echo "qemu-igb: needs root (network namespace, TAP device, QEMU)" >&2
  exit 1
fi
for tool in qemu-system-x86_64 busybox cpio ip ping socat curl sha256sum tcpdump; do
  command -v "$tool" >/dev/null || { echo "qemu-igb: $tool missing (run scripts/setup-system.sh)" >&2; exit 1; }
done
if ! qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'; then
  echo "qemu-igb: this QEMU has no igb model (QEMU >= 8 from bookworm-backports needed)" >&2
  exit 1
fi

work=$(mktemp -d /var/tmp/ferrite-qemu-run.XXXXXX)
ns="ferrite-igb-$$"
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  ip netns del "$ns" 2>/dev/null || true
  if [ "${FERRITE_QEMU_KEEP:-0}" = 1 ]; then echo "qemu-igb: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step() { printf 'qemu-igb [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# 1. Kernel (cached).
step "kernel"
vmlinux=$("$here/kernel.sh")

# 2. Binaries: prebuilt ones from FERRITE_BIN_DIR (a cargo profile directory; their shared
# libraries are copied in), or static ones built here so they run without a libc.
if [ -n "${FERRITE_BIN_DIR:-}" ]; then
  step "binaries from $FERRITE_BIN_DIR"
  bins=("$FERRITE_BIN_DIR/examples/intel_diag_responder" "$FERRITE_BIN_DIR/ferrite"
        "$FERRITE_BIN_DIR/ferrite-echo" "$FERRITE_BIN_DIR/ferrite-http")
else
  step "build static binaries"
  target=x86_64-unknown-linux-gnu
  tdir="$repo/target-qemu-static"
  ( cd "$repo" && CARGO_TARGET_DIR="$tdir" RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --quiet --target "$target" -p pmd --example intel_diag_responder \
        -p switch --bin ferrite -p apps --bin ferrite-echo --bin ferrite-http )
  r="$tdir/$target/release"
  bins=("$r/examples/intel_diag_responder" "$r/ferrite" "$r/ferrite-echo" "$r/ferrite-http")
fi
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "qemu-igb: $b missing" >&2; exit 1; }; done

# 3. Initramfs: busybox, the binaries, an init script. Uncompressed (faster under TCG).
step "initramfs"
rd="$work/rd"
mkdir -p "$rd"/{bin,proc,sys,dev,tmp,mnt/huge}
cp "$(command -v busybox)" "$rd/bin/busybox"
cp "${bins[@]}" "$rd/bin/"
# Shared libraries of dynamically linked binaries, at the paths the loader expects.
for b in "$rd"/bin/*; do
  [ "$b" = "$rd/bin/busybox" ] && continue
  { ldd "$b" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
    mkdir -p "$rd$(dirname "$lib")"
    cp -L "$lib" "$rd$lib"
  done
done
cp "$here/guest-init.sh" "$rd/init"
mkdir -p "$rd/lib/modules"
cp "$vmlinux.modules"/* "$rd/lib/modules/"
chmod +x "$rd/init"
( cd "$rd" && find . | cpio -o -H newc --quiet ) > "$work/rd.img"

# 4. The host side: a namespace with the TAP the guest NIC is plugged into.
step "network namespace $ns"
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev ftap0 mode tap
ip -n "$ns" addr add 10.77.0.1/24 dev ftap0
ip -n "$ns" link set ftap0 up

log=""
fail() {
  step "FAIL: $*"
  echo "----- guest serial log -----"; cat "$log" 2>/dev/null || true
  exit 1
}

wait_log() { # pattern seconds
  local deadline=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -q "$1" "$log" 2>/dev/null && return 0
    grep -qE 'RESPONDER FAILED|GUEST FAIL|Kernel panic' "$log" 2>/dev/null && return 1
    kill -0 "$qpid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

remaining() { echo $(( tmo - ($(date +%s) - start) )); }

# Pings run with a deadline (-w): ping then waits until every request is answered or the
# deadline passes. Without one it waits only two round trips after the last request, so a
# TCG guest that a busy 2-core host stalls for a few milliseconds loses the last reply.
rss_flows() { # 8 flows (source addresses) x 125 pings
  step "[rss] 8 flows x 125 pings"
  local a out total=0
  for a in $(seq 100 107); do ip -n "$ns" addr add "10.77.0.$a/24" dev ftap0 2>/dev/null || true; done
  for a in $(seq 100 107); do
    out=$(ip netns exec "$ns" ping -I "10.77.0.$a" -c 125 -i 0.002 -w 10 -q 10.77.0.2 2>&1 || true)
    echo "$out" | grep -q ' 125 received, 0% packet loss' || { echo "$out"; fail "[rss] flow from 10.77.0.$a lost packets"; }
    total=$((total + 125))
  done
  echo "$total echo replies over 8 flows"
}

ping_1000() { # label address: 1000 echo requests, every one answered
  step "[$1] ping 1000 $2"
  ip -n "$ns" neigh flush dev ftap0 2>/dev/null || true
  local out
  out=$(ip netns exec "$ns" ping -c 1000 -i 0.002 -w 20 -q "$2" 2>&1 || true)
  echo "$out" | tail -n 3
  echo "$out" | grep -q ' 1000 received, 0% packet loss' || fail "[$1] ping $2 lost packets"
}

# The server scenario: app domains behind the Ferrite server, which drives the NIC.
server_checks() {
  wait_log "GUEST SERVER READY" "$(remaining)" || fail "[server] server and apps did not come up"
  grep "GUEST" "$log" || true
  grep -q "GUEST no-kernel-driver" "$log" || fail "[server] a kernel driver claimed the NIC in the guest"
  ping_1000 server 10.77.0.11

  step "[server] TCP echo"
  head -c 200000 /dev/urandom > "$work/echo.in"
  ip netns exec "$ns" timeout 60 socat -t 5 -T 20 - TCP:10.77.0.11:7 < "$work/echo.in" > "$work/echo.out" || true
  if ! cmp -s "$work/echo.in" "$work/echo.out"; then
    fail "[server] TCP echo: sent $(stat -c %s "$work/echo.in") bytes, got $(stat -c %s "$work/echo.out") back, not identical"
  fi
  echo "200000 bytes echoed intact"

  step "[server] HTTP download (the app sends 64 KiB TCP frames, the NIC cuts them: TSO)"
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -q "port up.*backend=intel.*large_frames=65535 partial_csum=true" \
    || fail "[server] the intel port does not take large frames whole (TSO) or partial checksums"
  local want got
  want=$(sed -n 's/.*GUEST FILE sha256=\([0-9a-f]*\).*/\1/p' "$log" | head -n1)
  [ -n "$want" ] || fail "[server] guest did not report the file's sha256"
  # What reaches the peer: QEMU's tap has no virtio-net header (vnet_hdr=off), so the
  # device's segments arrive as they would off a real wire.
  local before
  before=$(grep -c "GUEST WEB" "$log" || true)
  ip netns exec "$ns" tcpdump -i ftap0 -nn -U -w "$work/http.pcap" 'tcp and src host 10.77.0.12' \
    2>/dev/null &
  local tpid=$!
  sleep 1
  ip netns exec "$ns" curl -sS --max-time 60 -o "$work/http.out" http://10.77.0.12/blob.bin \
    || fail "[server] curl failed"
  sleep 1
  kill "$tpid" 2>/dev/null || true
  wait "$tpid" 2>/dev/null || true
  got=$(sha256sum "$work/http.out" | cut -d' ' -f1)
  echo "size $(stat -c %s "$work/http.out") sha256 $got (guest: $want)"
  [ "$got" = "$want" ] || fail "[server] HTTP download: sha256 mismatch"
  local lens segs biggest
  lens=$(tcpdump -r "$work/http.pcap" -nn 2>/dev/null | sed -n 's/.*, length \([0-9]*\).*/\1/p' | awk '$1 > 0')
  segs=$(echo "$lens" | grep -c . || true)
  biggest=$(echo "$lens" | sort -n | tail -n 1)
  echo "peer received $segs data segments, the largest ${biggest:-0} bytes of payload"
  [ "$segs" -ge 700 ] || fail "[server] expected >= 700 MSS-sized segments of the 1 MiB download, saw $segs"
  [ "${biggest:-0}" -le 1460 ] || fail "[server] a segment of $biggest bytes reached the peer (MSS is 1460)"
  # The app handed the switch far fewer frames than the peer got segments.
  local deadline=$(( $(date +%s) + 15 )) sent=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(grep -c "GUEST WEB" "$log" || true)" -gt "$before" ]; then
      sent=$(grep "GUEST WEB" "$log" | tail -n 1 | awk '{print $7}')
      break
    fi
    sleep 1
  done
  echo "ferrite-http sent ${sent:-?} frames in all"
  [ -n "$sent" ] && [ "$sent" -lt $(( segs / 4 )) ] \
    || fail "[server] the app sent ${sent:-?} frames for $segs segments: not large frames"
}

# 5. One boot per scenario.
scenario() {
  local access=$1 machine=()
  log="$work/serial-$access.log"
  local mode=responder queues=1
  case "$access" in
    sysfs) machine=(-M pc) ;;
    rss) machine=(-M pc); queues=4 ;;
    vfio) machine=(-M q35 -device intel-iommu,intremap=on) ;;
    server) machine=(-M pc); mode=server; access=sysfs ;;
    *) fail "unknown scenario $access" ;;
  esac
  if [ "$mode" = server ]; then log="$work/serial-server.log"; fi
  local label=$access
  if [ "$access" = rss ]; then access=sysfs; fi
  step "[$access] boot guest"
  ip netns exec "$ns" qemu-system-x86_64 -accel tcg -cpu max -m 1G -smp 2 "${machine[@]}" \
    -display none -monitor none -serial "file:$log" -no-reboot \
    -kernel "$vmlinux" -initrd "$work/rd.img" \
    -append "console=ttyS0 panic=-1 loglevel=4 intel_iommu=on ferrite.ip=10.77.0.2 ferrite.mode=$mode ferrite.access=$access ferrite.queues=$queues" \
    -netdev tap,id=n0,ifname=ftap0,script=no,downscript=no,vnet_hdr=off \
    -device igb,netdev=n0,mac=52:54:00:12:34:56 &
  qpid=$!

  if [ "$mode" = server ]; then
    server_checks
    access=server
  else
    wait_log "RESPONDER READY" "$(remaining)" || fail "[$access] guest driver did not come up"
    grep "GUEST" "$log" || true
    grep "RESPONDER READY" "$log"
    grep -q "GUEST no-kernel-driver" "$log" || fail "[$access] a kernel driver claimed the NIC in the guest"
    if [ "$label" = rss ]; then
      rss_flows
    else
      ping_1000 "$access" 10.77.0.2
    fi
    sleep 2.5
    local last
    last=$(grep "RESPONDER arp" "$log" | tail -n 1)
    echo "$last"
    # Every echo reply went out of the app-style pool registered for transmit DMA.
    echo "$last" | grep -qE 'tx_from_app_pool=(1[0-9]{3}|[2-9][0-9]{3})' \
      || fail "[$access] replies were not transmitted from the registered pool"
    if [ "$label" = rss ]; then
      local busy
      busy=$(echo "$last" | sed -n 's/.*rx_per_queue=\[\([0-9, ]*\)\].*/\1/p' | tr ',' '\n' | awk '$1 > 0' | wc -l)
      [ "$busy" -ge 2 ] || fail "[rss] RSS used $busy queue(s); flows should spread over several"
      echo "RSS: $busy of 4 queues received frames"
    fi
    access=$label
  fi
  step "[$access] PASS"
  kill "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=""
}

for sc in ${FERRITE_QEMU_SCENARIOS:-sysfs vfio rss server}; do
  scenario "$sc"
done
step "PASS"
