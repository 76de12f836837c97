#!/usr/bin/env bash
# Builds everything the Xen-under-QEMU test boots, under $FERRITE_XEN_DIR
# (default /var/tmp/ferrite-xen):
#   xen          Xen 4.17 hypervisor, gunzipped (QEMU loads it as a multiboot kernel)
#   vmlinux      the Debian kernel as a raw ELF (dom0 and the PV domUs boot it uncompressed:
#                decompressing the bzImage under TCG costs seconds in Xen and in libxenguest)
#   dom0-rd.img  dom0 initramfs: busybox, xenstored, xenconsoled, xen-init-dom0, xl and their
#                libraries (plus libgcc_s.so.1, which glibc dlopens and ldd does not list),
#                kernel modules, the domU kernel and initramfs, the Ferrite server (`ferrite`),
#                xen_probe (the grant-backend suite), and the Linux peer's tools: iproute2 `ip`
#                (for `ip netns`), ethtool and curl with their libraries
#   domu-rd.img  domU initramfs: busybox, modules, the Ferrite apps (ferrite-http,
#                ferrite-bulk, ferrite-echo)
#
# Packages come from the Debian archive configured for apt (bookworm and bookworm-security):
# their versions are resolved now, at build time, downloaded once into $W/debs with
# `apt-get download` and unpacked with `dpkg -x`; nothing is installed on this host.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${FERRITE_XEN_SRC:-$(cd "$HERE/../.." && pwd)}   # the source tree to build Ferrite from
W=${FERRITE_XEN_DIR:-/var/tmp/ferrite-xen}
XENV=4.17
mkdir -p "$W/debs"
log() { echo "[xen-build] $*"; }

# ---- resolve versions ----------------------------------------------------------------
cand() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }
KPKG=$(apt-cache depends "linux-image-amd64=$(cand linux-image-amd64)" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve the kernel behind linux-image-amd64 (apt-get update?)" >&2; exit 1; }
KVER=${KPKG#linux-image-}
XPKGS="xen-hypervisor-$XENV-amd64 xen-utils-$XENV xen-utils-common xenstore-utils libxencall1
  libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1 libxenmisc$XENV
  libxenstore4 libxentoolcore1 libxentoollog1 libyajl2"
want=""
for p in $KPKG $XPKGS; do
  v=$(cand "$p")
  [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "package $p has no candidate: is bookworm-security in the apt sources?" >&2; exit 1; }
  want="$want $p=$v"
done
log "kernel $KPKG; xen $(cand xen-hypervisor-$XENV-amd64)"

# ---- download (cached) ---------------------------------------------------------------
cd "$W/debs"
for pv in $want; do
  p=${pv%%=*}; v=${pv#*=}; fv=${v//:/%3a}
  ls "${p}_${fv}_"*.deb >/dev/null 2>&1 || apt-get download -q "$pv" >/dev/null
done

# ---- unpack --------------------------------------------------------------------------
cd "$W"
stamp="$KPKG $want"
if [ "$(cat stamp 2>/dev/null)" != "$stamp" ]; then
  rm -rf x k && mkdir -p x k
  for pv in $want; do
    p=${pv%%=*}; v=${pv#*=}; fv=${v//:/%3a}
    d=$(ls debs/"${p}_${fv}_"*.deb)
    case $p in linux-image-*) dpkg -x "$d" k ;; *) dpkg -x "$d" x ;; esac
  done
  zcat "x/boot/xen-$XENV-amd64.gz" > xen
  # The bzImage payload is xz: find its magic and decompress the raw ELF vmlinux.
  off=$(grep -abo $'\xfd7zXZ\x00' "k/boot/vmlinuz-$KVER" | head -1 | cut -d: -f1)
  tail -c +$((off + 1)) "k/boot/vmlinuz-$KVER" | xz -dc > vmlinux 2>/dev/null || true
  [ "$(head -c 4 vmlinux | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || { echo "vmlinux extraction failed" >&2; exit 1; }
  echo "$stamp" > stamp
fi

# ---- the Ferrite binaries (static) ---------------------------------------------------
log "building the Ferrite server, apps and xen_probe (static)"
# One target directory per source tree: cargo judges freshness by file times, so two trees
# sharing one would each take the other's build of a crate as current.
TGT="$W/target-$(printf '%s' "$REPO" | sha1sum | cut -c1-12)"
(cd "$REPO" && CARGO_TARGET_DIR="$TGT" RUSTFLAGS="-C target-feature=+crt-static" \
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
  cargo build -q --release --target x86_64-unknown-linux-gnu -p switch --example xen_probe --bin ferrite \
    -p apps --bin ferrite-http --bin ferrite-bulk --bin ferrite-echo)
REL="$TGT/x86_64-unknown-linux-gnu/release"
BIN="$REL/examples/xen_probe"
APPS="$REL/ferrite-http $REL/ferrite-bulk $REL/ferrite-echo"
for b in "$BIN" "$REL/ferrite" $APPS; do
  file -b "$b" | grep -qE 'static(-pie)? linked' || { echo "$b is not static" >&2; exit 1; }
done
# The Linux peer's tools, from this host (scripts/setup-system.sh installs iproute2, ethtool, curl).
PEER_TOOLS=""
for t in ip ethtool curl; do
  p=$(PATH=/usr/sbin:/sbin:$PATH command -v $t) || { echo "$t is missing (scripts/setup-system.sh installs it)" >&2; exit 1; }
  PEER_TOOLS="$PEER_TOOLS $p"
done

MOD=k/lib/modules/$KVER/kernel
BUSYBOX=$(command -v busybox)
file -b "$BUSYBOX" | grep -q 'statically linked' || { echo "busybox is not static (install busybox-static)" >&2; exit 1; }

# ---- domU initramfs ------------------------------------------------------------------
rm -rf rdu && mkdir -p rdu/{bin,dev,proc/xen,sys,lib,tmp,run}
cp "$BUSYBOX" rdu/bin/busybox
cp $APPS rdu/bin/
cp "$REPO/tests/xen/domu-init" rdu/init && chmod +x rdu/init
for m in drivers/xen/xen-evtchn drivers/xen/xen-gntalloc; do
  cp "$MOD/$m.ko" rdu/lib/
done
(cd rdu && find . | cpio -o -H newc --quiet) > domu-rd.img

# ---- dom0 initramfs ------------------------------------------------------------------
rm -rf rd0 && mkdir -p rd0/var rd0/{bin,dev,proc/xen,sys,run,tmp,boot,lib/modules,lib64,etc/xen,usr/bin,usr/lib/xen-$XENV/bin,lib/x86_64-linux-gnu}
ln -s /run rd0/var/run
cp "$BUSYBOX" rd0/bin/busybox
cp "$BIN" rd0/bin/xen_probe
cp "$REL/ferrite" rd0/bin/ferrite
cp $PEER_TOOLS rd0/usr/bin/
cp "$REPO/tests/xen/ferrite.toml" rd0/etc/ferrite.toml
# The reference SHA-256 of the app-to-app stream, computed here on the host (a hash computed
# inside a TCG guest has come out wrong now and then; the bytes on the wire were right).
BULK_BYTES=${FERRITE_BULK_BYTES:-4000000}
(cd "$REPO" && CARGO_TARGET_DIR="$TGT" CARGO_PROFILE_RELEASE_LTO=false \
  cargo run -q --release -p apps --example pattern_sha -- "$BULK_BYTES") > rd0/etc/bulk.sha256
grep -qE '^[0-9a-f]{64}$' rd0/etc/bulk.sha256 || { echo "pattern_sha gave no digest" >&2; exit 1; }
for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
  cp "x/usr/lib/xen-$XENV/bin/$b" "rd0/usr/lib/xen-$XENV/bin/"
done
cp x/usr/bin/xenstore rd0/usr/bin/
for t in read write ls rm chmod; do ln -sf xenstore "rd0/usr/bin/xenstore-$t"; done
export LD_LIBRARY_PATH="$W/x/usr/lib/x86_64-linux-gnu"
for f in rd0/usr/lib/xen-$XENV/bin/* rd0/usr/bin/*; do ldd "$f" | awk '/=>/ {print $3}'; done | sort -u |
  while read -r lib; do cp -L "$lib" rd0/lib/x86_64-linux-gnu/; done
cp -L /lib64/ld-linux-x86-64.so.2 rd0/lib64/
# glibc dlopens libgcc_s for pthread_cancel; ldd cannot see that, and xl aborts without it.
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 rd0/lib/x86_64-linux-gnu/
cp x/etc/xen/xl.conf rd0/etc/xen/
for m in drivers/xen/xen-privcmd drivers/xen/xenfs/xenfs drivers/xen/xen-evtchn drivers/xen/xen-gntdev \
         drivers/xen/xen-gntalloc drivers/net/veth; do
  cp "$MOD/$m.ko" rd0/lib/modules/
done
cp "$REPO/tests/xen/dom0-init" rd0/init && chmod +x rd0/init
cp "$REPO/tests/xen/domu.cfg" rd0/etc/xen/
cp vmlinux rd0/boot/vmlinuz
cp domu-rd.img rd0/boot/
echo "root:x:0:0:root:/:/bin/sh" > rd0/etc/passwd
(cd rd0 && find . | cpio -o -H newc --quiet) > dom0-rd.img
log "ready in $W: $(ls -s --block-size=M xen vmlinux dom0-rd.img domu-rd.img | tr '\n' ' ')"
