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

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
ip=$(arg ferrite.ip)
mode=$(arg ferrite.mode)
access=$(arg ferrite.access)
# DMA memory: hugepages for the responder runs; none for the server run, so that the port
# takes its fallback, pinned 4 KiB pages translated one by one through pagemap.
if [ "$mode" = server ]; then echo 0 > /proc/sys/vm/nr_hugepages; else echo 16 > /proc/sys/vm/nr_hugepages; fi

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

server() {
  mkdir -p /run/ferrite /srv /etc
  cat > /etc/ferrite.toml <<EOT
[server]
socket = "/run/ferrite/ctl.sock"
socket_mode = "0600"

[[ports]]
name = "nic"
backend = "intel"
pci = "$bdf"

[[apps]]
uid = 0
name = "echo"
mac = "02:fe:00:00:00:01"

[[apps]]
uid = 0
name = "web"
mac = "02:fe:00:00:00:02"
EOT
  /bin/ferrite serve --config /etc/ferrite.toml > /tmp/ferrite.log 2>&1 &
  i=0
  while [ ! -S /run/ferrite/ctl.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  cat /tmp/ferrite.log
  [ -S /run/ferrite/ctl.sock ] || { echo "GUEST FAIL: server did not start"; return; }
  head -c 1048576 /dev/urandom > /srv/blob.bin
  echo "GUEST FILE sha256=$(sha256sum /srv/blob.bin | cut -d' ' -f1)"
  /bin/ferrite-echo --name echo --mac 02:fe:00:00:00:01 --ip 10.77.0.11/24 --port 7 > /tmp/echo.log 2>&1 &
  /bin/ferrite-http --name web --mac 02:fe:00:00:00:02 --ip 10.77.0.12/24 --root /srv --port 80 > /tmp/http.log 2>&1 &
  sleep 2
  /bin/ferrite stats --socket /run/ferrite/ctl.sock 2>&1 | head -n 20
  echo "GUEST SERVER READY"
  # Counters on the serial log while the host runs its checks.
  i=0
  while [ $i -lt 25 ]; do
    sleep 4
    echo "GUEST STATS $i"
    /bin/ferrite stats --socket /run/ferrite/ctl.sock 2>&1 | sed -n '3,5p'
    # The web app's row: frames it sent the switch are its rx_pkts (field 5).
    /bin/ferrite stats --socket /run/ferrite/ctl.sock 2>&1 | awk '$3 == "web" {print "GUEST WEB", $0}'
    if [ $i = 2 ]; then echo "GUEST echo log:"; cat /tmp/echo.log; echo "GUEST http log:"; cat /tmp/http.log; fi
    i=$((i + 1))
  done
}

case "$mode" in
  responder) /bin/intel_diag_responder "$bdf" "$ip" 100 "$access" "$(arg ferrite.queues)" ;;
  server) server ;;
  *) echo "GUEST FAIL: unknown mode $mode" ;;
esac
echo "GUEST DONE"
poweroff -f
