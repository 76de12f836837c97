#!/bin/busybox sh
# /init of the QEMU igb test guest: mounts, hugepages, finds the igb NIC, checks that no
# kernel driver owns it, runs the Ferrite side named by ferrite.mode= on the kernel command
# line, powers off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages
# Keep the kernel from migrating locked pages (the driver hands their physical addresses
# to the device).
echo 0 > /proc/sys/vm/compact_unevictable_allowed
echo 16 > /proc/sys/vm/nr_hugepages

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
ip=$(arg ferrite.ip)
mode=$(arg ferrite.mode)

bdf=""
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ]; then bdf=${d##*/}; fi
done
if [ -z "$bdf" ]; then echo "GUEST FAIL: no 82576 on the PCI bus"; poweroff -f; fi
if [ -e "/sys/bus/pci/devices/$bdf/driver" ]; then
  echo "GUEST FAIL: $bdf is bound to $(basename "$(readlink /sys/bus/pci/devices/$bdf/driver)")"
else
  echo "GUEST no-kernel-driver $bdf hugepages=$(cat /proc/sys/vm/nr_hugepages)"
fi

case "$mode" in
  responder) /bin/intel_diag_responder "$bdf" "$ip" 100 ;;
  *) echo "GUEST FAIL: unknown mode $mode" ;;
esac
echo "GUEST DONE"
poweroff -f
