#!/usr/bin/env bash
# Instructions (valgrind callgrind), cycles (perf stat, where the machine
# allows it) and wall-clock agent-steps/s of one CPU BatchEnv step, per
# agent-step, for the reference's 2-, 3- and 5-agent topologies: 1024 envs,
# metrics off, one thread; then the instructions of the step with every
# per-step metric (`step_with_metrics`) and their ratio to the plain
# step's. Counts are the difference between runs of LONG and SHORT batch
# steps, so setup is subtracted.
#
#   bash scripts/counts.sh            # builds the example first
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example env_throughput >&2
exe=target/release/examples/env_throughput
envs=1024
short=20
long=60

# Collected instructions of one run (callgrind's summary line); a third
# argument (--metrics) records every per-step metric.
instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$exe" \
        --agents "$1" --envs "$envs" --steps "$2" --repeats 1 --threads 1 ${3:-} 2>&1 >/dev/null |
        awk '/Collected :/ {print $NF}'
}

# Cycles of one run (perf stat), empty when perf cannot count here.
cycles() {
    perf stat -x, -e cycles "$exe" --agents "$1" --envs "$envs" --steps "$2" \
        --repeats 1 --threads 1 2>&1 >/dev/null | awk -F, '/cycles/ && $1 ~ /^[0-9]+$/ {print $1}' || true
}

printf '%-7s %16s %12s %22s %20s %8s\n' agents instructions/step cycles/step \
    "wall M agent-steps/s" "with metrics" ratio
for agents in 2 3 5; do
    per=$((envs * agents * (long - short)))
    i_short=$(instructions "$agents" "$short")
    i_long=$(instructions "$agents" "$long")
    ipas=$(awk -v a="$i_long" -v b="$i_short" -v p="$per" 'BEGIN {printf "%.0f", (a - b) / p}')
    m_short=$(instructions "$agents" "$short" --metrics)
    m_long=$(instructions "$agents" "$long" --metrics)
    mpas=$(awk -v a="$m_long" -v b="$m_short" -v p="$per" 'BEGIN {printf "%.0f", (a - b) / p}')
    ratio=$(awk -v m="$mpas" -v i="$ipas" 'BEGIN {printf "%.2f", m / i}')
    c_short=$(cycles "$agents" "$short")
    c_long=$(cycles "$agents" "$long")
    if [[ -n "$c_short" && -n "$c_long" ]]; then
        cpas=$(awk -v a="$c_long" -v b="$c_short" -v p="$per" 'BEGIN {printf "%.0f", (a - b) / p}')
    else
        cpas="n/a"
    fi
    wall=$("$exe" --agents "$agents" --envs 4096 --steps 200 --repeats 5 --threads 1 |
        sed -E 's/.*: ([0-9.]+) M agent-steps.*/\1/')
    printf '%-7s %16s %12s %22s %20s %8s\n' "$agents" "$ipas" "$cpas" "$wall" "$mpas" "$ratio"
done
