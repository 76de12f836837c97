#!/usr/bin/env bash
# Ferrite's main job: the server on its in-memory NIC, two app domains as separate processes,
# TCP bulk and UDP ping-pong between them through the switch. No privileges, no NIC.
# Extra arguments go to the demo (see `scripts/demo.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p switch --bin ferrite -p apps --bin ferrite-demo
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/release/ferrite-demo" "$@"
