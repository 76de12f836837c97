# Set-up shared by the switch profiling scripts (perf/callgrind.sh, perf/profile.sh), sourced
# with the profiler's command name: checks that it is installed, moves to the workspace root,
# builds the switch bench and sets `bin` (its path) and `out` (a scratch directory removed on
# exit). `machine_line` prints the machine a result was measured on.
tool=$1
command -v "$tool" >/dev/null || {
  echo "$tool not found: run scripts/setup-system.sh" >&2
  exit 1
}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p perf --bin switch
bin="${CARGO_TARGET_DIR:-target}/release/switch"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

machine_line() {
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores, Linux $(uname -r)"
}
