#!/usr/bin/env bash
# Hostile input through every decoder and handler of the server, generated
# (CI runs 20 000 inputs):   scripts/fuzz.sh [INPUTS]     default 1 000 000
# Release build; prints the count of each (class of input, outcome) and
# fails on the first panic, on an answer other than the one the input's
# class calls for, on a refused input that stored something, or on a
# decoded message that does not survive a round trip.
set -euo pipefail
cd "$(dirname "$0")/.."
KEQING_FUZZ_INPUTS="${1:-1000000}" \
  cargo test --release --locked -p keqing-tests --test suite fuzz -- --nocapture 2>&1 \
  | grep -E "^fuzz:|panicked|input [0-9]+|test result"
