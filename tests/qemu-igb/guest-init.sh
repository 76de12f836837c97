#!/bin/busybox sh
# /init of the QEMU igb test guest: mounts, hugepages, finds the igb NIC, checks that no
# kernel driver owns it, runs the Ferrite side named by ferrite.mode= on the kernel command
# line (with ferrite.access= sysfs or vfio), powers off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages
# Keep the kernel from migrating locked pages (without an IOMMU the driver hands their
# physical addresses to the device).
echo 0 > /proc/sys/vm/compact_unevictable_allowed
echo 16 > /proc/sys/vm/nr_hugepages

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
ip=$(arg ferrite.ip)
mode=$(arg ferrite.mode)
access=$(arg ferrite.access)

bdf=""
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10c9 ]; then bdf=${d##*/}; fi
done
if [ -z "$bdf" ]; then echo "GUEST FAIL: no 82576 on the PCI bus"; poweroff -f; fi
if [ -e "/sys/bus/pci/devices/$bdf/driver" ]; then
  echo "GUEST FAIL: $bdf is bound to $(basename "$(readlink /sys/bus/pci/devices/$bdf/driver)")"
else
  echo "GUEST no-kernel-driver $bdf hugepages=$(cat /proc/sys/vm/nr_hugepages) access=$access"
fi
if [ "$access" = vfio ]; then
  # VFIO's modules; the driver binds the NIC to vfio-pci itself.
  for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" || echo "GUEST FAIL: insmod $m"; done
  echo "GUEST iommu_group=$(basename "$(readlink /sys/bus/pci/devices/$bdf/iommu_group)")"
fi

case "$mode" in
  responder) /bin/intel_diag_responder "$bdf" "$ip" 100 "$access" ;;
  *) echo "GUEST FAIL: unknown mode $mode" ;;
esac
echo "GUEST DONE"
poweroff -f
