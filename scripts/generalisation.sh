#!/usr/bin/env bash
# The generalisation table (README, "One policy for any federation"): one
# agnostic policy trained on the pool configs/generalisation/train_pool.yaml,
# evaluated on the five unseen federations configs/generalisation/test_*.yaml
# against the heuristics, the oracle and a PPO trained on that federation
# alone (the default preset and layout). Every run uses seed 42, so every
# evaluation of a federation runs the same six evaluation episodes.
#
#   bash scripts/generalisation.sh [--gossip] [--local-bias B] [OUT]
#                                             (default OUT: runs/generalisation)
#
# With --gossip the agnostic policy also reads each node's gossip (its
# capacity; its neighbours' previous input rates, capacities and degrees);
# with --local-bias B its local output gets the fixed bias B (it starts by
# keeping most requests local). Its runs are OUT/VARIANT and
# OUT/test_*/VARIANT, VARIANT agnostic, agnostic_gossip, agnostic_local or
# agnostic_gossip_local; each trains 32 × 32 networks for 200 iterations,
# but agnostic_gossip 64 × 64 ones for 400 with the entropy weight decaying
# to 1e-3 (each setting chosen on the pool's own evaluation, README "With
# gossip and a local bias"). The per-federation PPO runs (OUT/test_*/ppo)
# are the same for every variant.
# Stages already done (a run folder with evaluation.csv) are not rerun; the
# agnostic policy is trained and evaluated before the per-federation PPOs.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=agnostic
flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --gossip) variant=${variant}_gossip; flags+=(--gossip); shift ;;
    --local-bias) variant=${variant}_local; flags+=(--local-bias "$2"); shift 2 ;;
    *) break ;;
  esac
done
if [ "$variant" = agnostic_gossip ]; then
  flags+=(--hidden 64,64 --iterations 400 --entropy-final 1e-3)
else
  flags+=(--hidden 32,32 --iterations 200)
fi
out=${1:-runs/generalisation}
budget=5000
mkdir -p "$out"
cargo build --release --example train_ppo --example evaluate
bin=target/release/examples
if [ ! -f "$out/$variant/evaluation.csv" ]; then
  "$bin/train_ppo" --config configs/generalisation/train_pool.yaml --layout agnostic "${flags[@]}" \
    --num-envs 4 --oracle-budget 2000 --out "$out/$variant"
fi
for config in configs/generalisation/test_*.yaml; do
  name=$(basename "$config" .yaml)
  if [ ! -f "$out/$name/$variant/evaluation.csv" ]; then
    "$bin/evaluate" --checkpoint "$out/$variant" --config "$config" \
      --oracle-budget "$budget" --out "$out/$name/$variant"
  fi
done
for config in configs/generalisation/test_*.yaml; do
  name=$(basename "$config" .yaml)
  if [ ! -f "$out/$name/ppo/evaluation.csv" ]; then
    "$bin/train_ppo" --config "$config" --oracle-budget "$budget" --out "$out/$name/ppo"
  fi
done
python3 scripts/generalisation_table.py "$out" "$variant"
