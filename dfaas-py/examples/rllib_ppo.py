"""Train RLlib PPO on the Rust DFaaS environment with the reference's
settings (old API stack, one policy per agent, RLlib's Dirichlet over a
``Simplex``), on a local Ray instance; ``--num-env-runners N`` samples in
N parallel env runners (Ray's own scale-out path).

    python dfaas-py/examples/rllib_ppo.py --iterations 2
    python dfaas-py/examples/rllib_ppo.py --iterations 2 --num-env-runners 2

The reference's ``configs/exp/ppo.yaml``: γ 0.7, λ 0.3, entropy 0.02
decaying linearly to 1e-6 over 70 % of the iterations, one 288-step episode
per iteration and runner, 30 epochs of minibatches of 144, RLlib's
defaults otherwise (lr 5e-5, KL coefficient 0.2, value clip 10, 2 × 256 tanh
networks without shared layers).
"""

import argparse
import time

import ray
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.policy.policy import PolicySpec
from ray.tune.registry import register_env

from dfaas.rllib import DFaaS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--num-env-runners", type=int, default=0)
    parser.add_argument(
        "--config", help="a YAML/JSON environment configuration (default: the embedded one)"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.iterations < 1 or args.num_env_runners < 0:
        parser.error("--iterations must be >= 1 and --num-env-runners >= 0")

    env_config = {"config_path": args.config} if args.config else None
    register_env("DFaaS", lambda config: DFaaS(config or env_config))
    probe = DFaaS(env_config)
    steps = probe.max_steps
    runners = max(args.num_env_runners, 1)
    policies = {
        f"policy_{agent}": PolicySpec(
            observation_space=probe.observation_space[agent],
            action_space=probe.action_space[agent],
        )
        for agent in probe.agents
    }
    decay_steps = int(0.7 * args.iterations) * steps * runners
    config = (
        PPOConfig()
        .api_stack(
            enable_rl_module_and_learner=False,
            enable_env_runner_and_connector_v2=False,
        )
        .environment(env="DFaaS", env_config=env_config or {})
        .framework("torch")
        .env_runners(
            num_env_runners=args.num_env_runners,
            batch_mode="complete_episodes",
            rollout_fragment_length=steps,
        )
        .training(
            train_batch_size=steps * runners,
            minibatch_size=144,
            num_epochs=30,
            gamma=0.7,
            lambda_=0.3,
            entropy_coeff=0.02,
            entropy_coeff_schedule=[[0, 0.02], [max(decay_steps, 1), 1e-6]],
            model={"vf_share_layers": False},
        )
        .multi_agent(
            policies=policies,
            policy_mapping_fn=lambda agent_id, *a, **k: f"policy_{agent_id}",
        )
        .resources(num_gpus=0)
        .debugging(seed=args.seed)
    )
    ray.init(include_dashboard=False)
    algo = config.build()
    for _ in range(args.iterations):
        start = time.perf_counter()
        result = algo.train()
        seconds = time.perf_counter() - start
        runners_result = result.get("env_runners", result)
        reward = runners_result.get(
            "episode_return_mean", runners_result.get("episode_reward_mean")
        )
        agent_steps = result.get("num_agent_steps_sampled_lifetime")
        print(
            f"iteration {result['training_iteration']}: episode reward mean {reward}, "
            f"agent steps sampled {agent_steps}, {seconds:.1f} s"
        )
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
