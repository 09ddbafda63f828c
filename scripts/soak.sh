#!/usr/bin/env bash
# The soak run: 27 offices × 2 devices edit and sync at a steady rate against
# a real keqing-server for SECONDS (default 600) at RATE syncs/s (default 20);
# prints sync latency p50/p99/max and the server's RSS every 10 s.
#   scripts/soak.sh [SECONDS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
KEQING_SOAK_SECONDS="${1:-600}" KEQING_SOAK_RATE="${2:-20}" \
  cargo test --release --locked -p keqing-tests --test suite soak -- --ignored --nocapture 2>&1 \
  | grep -E "^soak:|sync error|panicked|test result"
