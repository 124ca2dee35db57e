#!/usr/bin/env python3
"""Prints the generalisation table (README, "One policy for any federation")
from the run folders scripts/generalisation.sh writes under OUT:

  OUT/test_<name>/VARIANT/evaluation.csv   the pool-trained agnostic policy
                                           (`evaluate --config`), row `ppo`;
                                           VARIANT agnostic, or agnostic_gossip
                                           for the one trained with --gossip
  OUT/test_<name>/ppo/evaluation.csv       a PPO trained on that federation
                                           alone (`train_ppo --config`)

Both evaluate the same six episodes, so their deterministic heuristics'
rows must agree; the script checks it (`random` draws from a stream seeded
differently by the two examples, so each policy is compared with its own
evaluation's rows). Each run's oracle is seeded with the splits of the
controllers evaluated beside it, so the two oracle figures may differ: both
are lower bounds on the per-step optimum and the table shows the larger.

  python3 scripts/generalisation_table.py [OUT] [VARIANT]
                                   (default runs/generalisation agnostic)
"""

import csv
import sys
from pathlib import Path

HEURISTICS = ["all_local", "random", "static_60_40", "recalc", "node_margin"]


def rewards(path):
    with open(path, newline="") as f:
        return {row["policy"]: float(row["mean_reward"]) for row in csv.DictReader(f)}


def nodes(run):
    """Nodes of a run's built configuration: the lines of its `network` list."""
    lines = (run / "env_config.yaml").read_text().splitlines()
    start = lines.index("network:") + 1
    count = 0
    for line in lines[start:]:
        if not line.startswith("- "):
            break
        count += 1
    return count


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/generalisation")
    variant = sys.argv[2] if len(sys.argv) > 2 else "agnostic"
    print("| federation | nodes | agnostic (pool) | PPO (this federation) | best heuristic | oracle | agnostic − PPO | agnostic / oracle | agnostic beats every heuristic | PPO beats every heuristic |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    wins, close = 0, 0
    done = [
        t for t in out.glob("test_*")
        if (t / variant / "evaluation.csv").is_file() and (t / "ppo" / "evaluation.csv").is_file()
    ]
    tests = sorted(done, key=lambda p: nodes(p / "ppo"))
    for test in tests:
        agnostic = rewards(test / variant / "evaluation.csv")
        own = rewards(test / "ppo" / "evaluation.csv")
        for h in HEURISTICS:
            if h != "random" and abs(agnostic[h] - own[h]) > 1e-6:
                sys.exit(f"{test.name}: {h} differs between the two evaluations ({agnostic[h]} vs {own[h]}): not the same episodes")
        best = max(HEURISTICS, key=lambda h: own[h])
        oracle = max(agnostic["oracle"], own["oracle"])
        a, p = agnostic["ppo"], own["ppo"]
        beats = all(a > agnostic[h] for h in HEURISTICS)
        own_beats = all(p > own[h] for h in HEURISTICS)
        wins += beats
        close += a >= p - 0.02
        print(
            f"| {test.name.removeprefix('test_')} | {nodes(test / 'ppo')} | {a:.4f} | {p:.4f} "
            f"| {own[best]:.4f} ({best}) | {oracle:.4f} | {a - p:+.4f} | {a / oracle:.3f} | {'yes' if beats else 'no'} | {'yes' if own_beats else 'no'} |"
        )
    print(f"\nagnostic beats every heuristic on {wins} of {len(tests)}; within 0.02 of the per-federation PPO on {close} of {len(tests)}")


if __name__ == "__main__":
    main()
