#!/usr/bin/env bash
# Re-measures every training figure the README quotes besides the main
# table (`cargo run --release --example train_ppo`): other seeds, the
# layouts, a longer run, the defaults sweep and selfish vs team rewards.
# Each line of the output is one run: its flags and its PPO evaluation
# reward (from the run's evaluation.csv), then the best baseline's.
# Takes about 8 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example train_ppo --quiet
out="${SWEEP_OUT:-runs/sweep}"
mkdir -p "$out"

run() {
  local name="$1"; shift
  target/release/examples/train_ppo --out "$out/$name" "$@" > "$out/$name.log" 2>&1
  local ppo best
  ppo=$(awk -F, '$1 == "ppo" { print $2 }' "$out/$name/evaluation.csv")
  best=$(awk -F, 'NR > 1 && $1 != "ppo" && $1 != "oracle" { if ($2 > b) { b = $2; n = $1 } } END { print n " " b }' "$out/$name/evaluation.csv")
  printf '%-28s %-60s ppo %s  best baseline %s\n' "$name" "$*" "$ppo" "$best"
}

for seed in 1 2 3; do run "seed_$seed" --seed "$seed"; done
for layout in shared mappo; do run "layout_$layout" --layout "$layout"; done
# Every layout with an entropy floor of 1e-3 instead of the decay to 1e-6.
for layout in independent shared mappo; do
  run "floor_$layout" --layout "$layout" --entropy-final 1e-3
done
run long --iterations 1000
# The defaults sweep, 150 iterations each, from the reference-like start.
start=(--iterations 150 --gamma 0.7 --lambda 0.9 --lr 3e-3)
run sweep_start "${start[@]}"
run sweep_gamma0 --iterations 150 --gamma 0 --lambda 0 --lr 3e-3
run sweep_lr1e-3 --iterations 150 --gamma 0 --lambda 0 --lr 1e-3
run sweep_entropy0 --iterations 150 --entropy 0
run sweep_epochs8 --iterations 150 --epochs 8
run sweep_hidden32 --iterations 150 --hidden 32,32
run sweep_envs32 --iterations 150 --num-envs 32
# Selfish agents (the reference) against the team reward.
run selfish --iterations 200 --gamma 0.7 --lambda 0.9 --lr 3e-3 --team-reward 0
run team --iterations 100 --gamma 0.7 --lambda 0.9 --lr 3e-3 --team-reward 1
