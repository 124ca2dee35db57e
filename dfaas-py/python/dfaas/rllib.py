"""``dfaas.rllib.DFaaS``: the Rust environment as an RLlib ``MultiAgentEnv``
(old API stack, as the reference trains), a drop-in for the reference's
``dfaas_env.DFaaS`` class.

Needs Ray RLlib (``pip install "ray[rllib]"``); importing this module
without it raises ``ImportError``. Register it as the reference's training
script registers its own class::

    from ray.tune.registry import register_env
    from dfaas.rllib import DFaaS
    register_env("DFaaS", lambda env_config: DFaaS(env_config))

Spaces: per agent, the observation ``Dict`` of ``ParallelEnv`` (float32
``Box((1,))`` entries; the reference declares int32 and feeds float32 at
step 0 and int32 later) and RLlib's ``Simplex((k + 2,))`` as the action
space, so RLlib builds the same Dirichlet distribution as for the
reference.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import gymnasium as gym
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.utils.spaces.simplex import Simplex

from dfaas.env import ParallelEnv


class DFaaS(MultiAgentEnv):
    """The DFaaS environment for RLlib.

    ``config`` is RLlib's ``env_config``: a mapping with the reference's
    configuration keys (an empty one: the reference's defaults), or with a
    single key ``"config_path"`` naming a YAML/JSON file; ``None``: the
    embedded default scenario. Episodes end after ``max_steps`` steps for
    every agent at once (``terminateds["__all__"]``); they are never
    truncated. ``reset(seed=s)`` reseeds the master stream as the
    reference's does; ``options={"override_seed": e}`` fixes the episode's
    seed.
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        if config is not None and "config_path" in config:
            source: Any = config["config_path"]
        else:
            source = None if config is None else dict(config)
        self._env = ParallelEnv(source)
        self.agents = self.possible_agents = list(self._env.possible_agents)
        self.observation_space = gym.spaces.Dict(
            {a: self._env.observation_space(a) for a in self.agents}
        )
        self.action_space = gym.spaces.Dict(
            {a: Simplex(shape=self._env.action_space(a).shape) for a in self.agents}
        )
        self.max_steps = self._env.model.max_steps
        super().__init__()

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        return self._env.reset(seed=seed, options=options)

    def step(self, action_dict):
        obs, rewards, terminations, truncations, infos = self._env.step(action_dict)
        done = all(terminations.values())
        terminateds = dict(terminations, __all__=done)
        truncateds = dict(truncations, __all__=False)
        return obs, rewards, terminateds, truncateds, infos

    def stats(self) -> dict:
        """The current episode's per-step metrics (see
        ``ParallelEnv.stats``)."""
        return self._env.stats()
