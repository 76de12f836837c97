#!/usr/bin/env bash
# Fetches the current Debian kernel package (resolved through the linux-image-amd64 meta
# package at run time, never a pinned version), extracts it with dpkg -x into a cache and
# turns its bzImage into a raw ELF vmlinux (faster to boot under TCG: no in-guest
# decompression). Keeps the VFIO modules (in load order) next to it, in <vmlinux>.modules/.
# Prints the path of the vmlinux. Cached: a warm run costs nothing.
set -euo pipefail

cache=${FERRITE_QEMU_CACHE:-/var/tmp/ferrite-qemu}
mkdir -p "$cache"
cd "$cache"

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  echo "kernel.sh: cannot resolve linux-image-amd64 to a kernel package (apt-get update?)" >&2
  exit 1
fi
out="$cache/$pkg.vmlinux"
if [ -s "$out" ] && [ -s "$out.modules/order" ]; then
  echo "$out"
  exit 0
fi

if ! ls "$cache"/"$pkg"_*.deb >/dev/null 2>&1; then
  apt-get download "$pkg" >&2
fi
deb=$(ls "$cache"/"$pkg"_*.deb | head -n1)
rm -rf "$cache/x-$pkg"
dpkg -x "$deb" "$cache/x-$pkg"
bz=$(ls "$cache/x-$pkg"/boot/vmlinuz-* | head -n1)

# The bzImage carries the kernel as an xz stream: find its magic (fd 37 7a 58 5a 00) and
# decompress from there; xz stops at the end of the stream and complains about the trailer.
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -n1 | cut -d: -f1 || true)
if [ -z "$off" ]; then
  echo "kernel.sh: no xz stream in $bz" >&2
  exit 1
fi
tail -c +"$((off + 1))" "$bz" | xz -dc > "$out.tmp" 2>/dev/null || true
if ! file "$out.tmp" | grep -q ELF; then
  echo "kernel.sh: decompressed kernel is not an ELF image" >&2
  rm -f "$out.tmp"
  exit 1
fi
mv "$out.tmp" "$out"

# VFIO for the guest, in dependency order.
mods="$out.modules"
rm -rf "$mods" && mkdir -p "$mods"
: > "$mods/order"
for m in irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci; do
  f=$(find "$cache/x-$pkg/lib/modules" -name "$m.ko*" | head -n1)
  if [ -z "$f" ]; then echo "kernel.sh: module $m not in $pkg" >&2; exit 1; fi
  cp "$f" "$mods/"
  basename "$f" >> "$mods/order"
done
rm -rf "$cache/x-$pkg"
echo "$out"
