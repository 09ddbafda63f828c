#!/usr/bin/env bash
# Runs every benchmark and writes BENCHMARKS.md: the machine, the date, and
# each benchmark's printed figures (each measures its own baseline in the
# same run). On 2 cores: replica ~13 min, encryption ~30 s, reports ~20 min, sync with the samod
# side-by-side at the default 10 000 documents well over an hour (samod's cost
# grows faster than linearly; KEQING_SYNC_BENCH_DOSSIERS=4000 takes ~5 min),
# the soak run 10 min.
set -euo pipefail
cd "$(dirname "$0")/.."
out=BENCHMARKS.md
tmp=$(mktemp)
{
    echo "# Keqing benchmarks"
    echo
    echo "Written by \`scripts/benchmarks.sh\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)."
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr), $(rustc --version)."
    echo
    for bench in "keqing-office replica" "keqing-office encryption" "keqing-office sign_in" "keqing-server sync" "keqing-server reports"; do
        set -- $bench
        echo "## \`cargo bench -p $1 --bench $2\`"
        echo
        echo '```'
        cargo bench -q -p "$1" --bench "$2" 2>/dev/null
        echo '```'
        echo
    done
    echo "## \`scripts/soak.sh 600 20\` (27 offices × 2 devices against a real server)"
    echo
    echo '```'
    scripts/soak.sh 600 20
    echo '```'
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
