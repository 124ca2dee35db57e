#!/usr/bin/env bash
# The generalisation table (README, "One policy for any federation"): one
# agnostic policy trained on the pool configs/generalisation/train_pool.yaml,
# evaluated on the five unseen federations configs/generalisation/test_*.yaml
# against the heuristics, the oracle and a PPO trained on that federation
# alone (the default preset and layout). Every run uses seed 42, so every
# evaluation of a federation runs the same six evaluation episodes.
#
#   bash scripts/generalisation.sh [OUT]      (default OUT: runs/generalisation)
#
# Stages already done (a run folder with evaluation.csv) are not rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/generalisation}
budget=5000
mkdir -p "$out"
cargo build --release --example train_ppo --example evaluate
bin=target/release/examples
if [ ! -f "$out/agnostic/evaluation.csv" ]; then
  "$bin/train_ppo" --config configs/generalisation/train_pool.yaml --layout agnostic \
    --hidden 32,32 --num-envs 4 --iterations 200 --oracle-budget 2000 --out "$out/agnostic"
fi
for config in configs/generalisation/test_*.yaml; do
  name=$(basename "$config" .yaml)
  if [ ! -f "$out/$name/agnostic/evaluation.csv" ]; then
    "$bin/evaluate" --checkpoint "$out/agnostic" --config "$config" \
      --oracle-budget "$budget" --out "$out/$name/agnostic"
  fi
  if [ ! -f "$out/$name/ppo/evaluation.csv" ]; then
    "$bin/train_ppo" --config "$config" --oracle-budget "$budget" --out "$out/$name/ppo"
  fi
done
python3 scripts/generalisation_table.py "$out"
