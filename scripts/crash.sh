#!/usr/bin/env bash
# SIGKILL of the client during sync and of the server during ingest and
# projection, then restart; every acknowledged change must survive and all
# replicas converge (CI runs 50 kills):   scripts/crash.sh [KILLS]   default 1000
set -euo pipefail
cd "$(dirname "$0")/.."
KEQING_CRASH_KILLS="${1:-1000}" \
  cargo test --release --locked -p keqing-tests --test suite sigkill_of_client_and_server -- --nocapture 2>&1 \
  | grep -E "^crash:|panicked|test result"
