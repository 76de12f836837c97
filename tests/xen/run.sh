#!/usr/bin/env bash
# Runs the Ferrite Xen test: builds the images (tests/xen/build.sh), boots Xen 4.17 + dom0
# under QEMU TCG (-cpu max,-xsave,-sha-ni -smp 2 -m 2G), and reads the verdict from the serial log.
# Every log line is prefixed with host seconds since QEMU started.
# Exit status 0 iff the serial log says "FERRITE-XEN PASS".
# Env: FERRITE_XEN_DIR (work dir), FERRITE_XEN_SRC (source tree), FERRITE_XEN_TIMEOUT (s, default
# 900: a loaded 2-core host slows TCG tenfold), FERRITE_BIG_MB (default 24: the download the
# server restart lands in), FERRITE_BULK_BYTES (default 4000000: the app-to-app stream), FERRITE_XEN_CPU.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${FERRITE_XEN_DIR:-/var/tmp/ferrite-xen}
export FERRITE_XEN_DIR=$W
t0=$(date +%s.%N)
"$HERE/build.sh"
t1=$(date +%s.%N)
LOG=$W/serial.log
cd "$W"
# -cpu max without XSAVE: with TCG's XSAVE, processes in the PV domains (dom0 and domU alike)
# crash at random once several domains run (busybox segfaults, "malloc(): corrupted top size"
# in static glibc binaries), consistent with extended register state lost across context
# switches. With -xsave (or -cpu qemu64) the same images ran clean. Without SHA-NI too: with it,
# the sha256 the apps compute over the app-to-app stream in their domUs (sha2 uses SHA-NI when
# the CPU has it) came out wrong in some runs on a loaded host, the source's over bytes it
# generates itself as well as the sink's, while busybox's sha256sum (no SHA-NI) never did;
# the suspicion, not proven, is TCG's SHA-NI or its XMM state across PV context switches.
# FERRITE_XEN_CPU overrides the choice.
timeout -k 5 "${FERRITE_XEN_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu "${FERRITE_XEN_CPU:-max,-xsave,-sha-ni}" -m 2G -smp 2 \
  -nographic -monitor none -serial stdio -no-reboot \
  -kernel xen \
  -append "console=com1 com1=115200,8n1 loglvl=warning guest_loglvl=warning noreboot dom0_mem=1024M,max:1024M" \
  -initrd "vmlinux console=hvc0 earlyprintk=xen loglevel=4 FERRITE_BIG_MB=${FERRITE_BIG_MB:-24} FERRITE_BULK_BYTES=${FERRITE_BULK_BYTES:-4000000},dom0-rd.img" \
  </dev/null 2>&1 |
  perl -MTime::HiRes=time -ne 'BEGIN{$|=1; $s=time} s/\r//g; printf "%7.2f %s", time-$s, $_' > "$LOG" || true
t2=$(date +%s.%N)
printf 'build %.1f s, boot+test %.1f s; serial log %s\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$LOG"
"$HERE/summary.sh" "$LOG" || true
grep -q 'FERRITE-XEN PASS' "$LOG"
