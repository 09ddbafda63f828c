#!/usr/bin/env bash
# The network-fault property test over many seeds (CI runs 200):
#   scripts/faults.sh [SEEDS] [FIRST_SEED]     e.g. scripts/faults.sh 10000
# Release build; prints the summary line (seeds, records, syncs broken by
# faults, lost acks: changes a retry found already stored, connections
# refused / cut / answers cut / delayed) and fails on the first seed
# that does not converge (its number is in the message: rerun it alone with
# scripts/faults.sh 1 SEED).
set -euo pipefail
cd "$(dirname "$0")/.."
KEQING_FAULT_SEEDS="${1:-10000}" KEQING_FAULT_FIRST_SEED="${2:-1}" \
  cargo test --release --locked -p keqing-tests --test suite faults -- --nocapture 2>&1 \
  | grep -E "^faults:|panicked|seed [0-9]+|test result"
