"""Python-level throughput, side by side in one run: ``dfaas.ParallelEnv``
(dict observations), ``dfaas.VectorEnv`` (numpy arrays) and the Rust
``BatchEnv`` underneath it without Python's per-step work — and, with
``--reference PATH`` (a checkout of unimib-datAI/marl-dfaas whose
requirements are installed), the reference environment measured as
``../shared/conformance/REFERENCE_SPEED.md`` does: ``reset(seed)`` + 288
steps per episode, actions cycled from a pool of 2000 pre-drawn
Dirichlet(1) dictionaries, at least ``--seconds`` per run, the median of
``--runs`` runs.

    python dfaas-py/examples/throughput.py --reference /tmp/marl-dfaas
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

import dfaas
from dfaas import _dfaas


def dirichlet_pool(rng, spaces, size=2000):
    return [
        {a: rng.dirichlet(np.ones(space.shape[0])).astype(np.float32) for a, space in spaces.items()}
        for _ in range(size)
    ]


def episode_loop(env, agents, pool, seconds):
    """Agent-steps/s of whole episodes with actions cycled from `pool`."""
    steps, i, episode = 0, 0, 0
    start = time.perf_counter()
    while True:
        env.reset(seed=episode)
        episode += 1
        done = False
        while not done:
            _, _, terminations, _, _ = env.step(pool[i % len(pool)])
            i += 1
            steps += 1
            done = all(terminations[a] for a in agents)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps * len(agents) / elapsed


def parallel_env_rate(config, seconds):
    env = dfaas.ParallelEnv(config)
    pool = dirichlet_pool(np.random.default_rng(0), {a: env.action_space(a) for a in env.possible_agents})
    return episode_loop(env, env.possible_agents, pool, seconds)


def vector_actions(env, rng, count=8):
    shape = env.action_space.shape
    out = []
    for _ in range(count):
        actions = np.zeros(shape, dtype=np.float32)
        for a in range(shape[1]):
            k = int(env.action_mask[a].sum())
            actions[:, a, :k] = rng.dirichlet(np.ones(k), size=shape[0])
        out.append(actions)
    return out


def vector_env_rates(config, envs, seconds):
    """(VectorEnv agent-steps/s, Rust BatchEnv agent-steps/s)."""
    env = dfaas.VectorEnv(config, num_envs=envs)
    actions = vector_actions(env, np.random.default_rng(0))
    agents = len(env.agents)
    env.reset(seed=0)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(actions[steps % len(actions)])
        steps += 1
    python = steps * envs * agents / (time.perf_counter() - start)
    batch = _dfaas.BatchEnv(env.model, envs)
    batch.reset(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch.step_repeatedly(actions[steps % len(actions)], 10)
        steps += 10
    rust = steps * envs * agents / (time.perf_counter() - start)
    return python, rust


def reference_rate(path, config_file, seconds):
    sys.path.insert(0, path)
    cwd = os.getcwd()
    os.chdir(path)  # the reference opens dataset/ relative to its checkout
    try:
        import yaml
        from dfaas_env_config import DFaaSConfig

        with open(config_file) as f:
            env = DFaaSConfig.from_dict(yaml.safe_load(f)).build()
        agents = list(env.agents)
        pool = dirichlet_pool(np.random.default_rng(0), {a: env.action_space[a] for a in agents})
        return episode_loop(env, agents, pool, seconds)
    finally:
        os.chdir(cwd)


def median(runs, measure):
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="a marl-dfaas checkout (its requirements installed)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--envs", type=int, default=4096)
    args = parser.parse_args()
    names = ["two_agents", "three_agents", "five_agents"]
    print(f"{'config':<14} {'reference':>12} {'ParallelEnv':>12} {'ratio':>7} {'VectorEnv':>12} {'BatchEnv':>12} {'overhead':>9}")
    for name in names:
        if args.reference:
            config = os.path.join(args.reference, "configs", "env", f"{name}.yaml")
        else:
            config = None if name == "three_agents" else {
                "network": ["node_0 node_1"] if name == "two_agents" else
                ["node_0 node_1 node_2", "node_1 node_3", "node_2 node_4", "node_3 node_4"]
            }
        reference = (
            median(args.runs, lambda: reference_rate(args.reference, config, args.seconds))[0]
            if args.reference else None
        )
        ours = median(args.runs, lambda: parallel_env_rate(config, args.seconds))[0]
        rates = [vector_env_rates(config, args.envs, args.seconds) for _ in range(args.runs)]
        vector = statistics.median(r[0] for r in rates)
        rust = statistics.median(r[1] for r in rates)
        ref_cell = f"{reference:12.0f}" if reference else f"{'-':>12}"
        ratio = f"{ours / reference:7.1f}" if reference else f"{'-':>7}"
        print(
            f"{name:<14} {ref_cell} {ours:12.0f} {ratio} {vector:12.3e} {rust:12.3e} "
            f"{100 * (rust / vector - 1):8.1f}%"
        )


if __name__ == "__main__":
    main()
