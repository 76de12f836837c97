#!/usr/bin/env bash
# Installs the system packages Ferrite's tests and benchmarks use, from Debian.
# Idempotent: packages already present are skipped, so a warm machine pays nothing.
# QEMU comes from bookworm-backports (QEMU 10 carries the `igb` NIC model); the
# backports suite is added by reusing the mirror URI already configured for apt.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
# nginx: the Linux baseline of `perf --bin vs_linux`'s HTTP rows (a file download with
# sendfile, and wrk on a small page, against ferrite-http). The benchmark runs the binary with
# a configuration of its own inside a network namespace; the package's service is not used.
# prometheus: its promtool checks the server's metrics exposition in a test (the package's
# service is not used).
need=(iproute2 iputils-ping curl wrk iperf3 sockperf socat netcat-openbsd tcpdump tshark
      ethtool busybox-static cpio xz-utils kmod valgrind linux-perf python3 file nginx
      prometheus)
backports=(qemu-system-x86)

missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
bp_missing=()
for p in "${backports[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || bp_missing+=("$p")
done

# The Debian kernel the QEMU igb test boots (resolved from linux-image-amd64, cached).
bash "$(dirname "$0")/../tests/qemu-igb/kernel.sh" >/dev/null || echo "setup-system: QEMU test kernel not fetched (tests/qemu-igb/kernel.sh)" >&2

if [ ${#missing[@]} -eq 0 ] && [ ${#bp_missing[@]} -eq 0 ]; then
  echo "setup-system: all packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system: missing packages (${missing[*]} ${bp_missing[*]}) and not root; install them or run as root" >&2
  exit 1
fi

add_backports() {
  # Already configured?
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then return; fi
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | head -n1 | awk '{print $2}')
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list | grep -v security | head -n1 | awk '{print $2}')
  fi
  if [ -z "$uri" ]; then
    echo "setup-system: no Debian mirror found in apt sources; cannot add bookworm-backports" >&2
    exit 1
  fi
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" > /etc/apt/sources.list.d/ferrite-backports.sources
}

add_backports
apt-get update -qq
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-system: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#bp_missing[@]} -gt 0 ]; then
  echo "setup-system: installing ${bp_missing[*]} from bookworm-backports"
  apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bp_missing[@]}" >/dev/null
fi
echo "setup-system: done"
