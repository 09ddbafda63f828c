#!/usr/bin/env bash
# SIGKILL of the client during sync and of the server during ingest and
# projection, then restart; every acknowledged change must survive and all
# replicas converge (CI runs 50 kills):   scripts/crash.sh [KILLS]   default 1000
# Each kill waits for its victim's next write transaction (marked in a file,
# KEQING_WRITE_MARKER); the summary line prints how many kills cut one
# (`interrupted`, required to be most of them) and how many victims had
# finished before the signal (not counted as kills).
set -euo pipefail
cd "$(dirname "$0")/.."
KEQING_CRASH_KILLS="${1:-1000}" \
  cargo test --release --locked -p keqing-tests --test suite sigkill_of_client_and_server -- --nocapture 2>&1 \
  | grep -E "^crash:|panicked|test result"
