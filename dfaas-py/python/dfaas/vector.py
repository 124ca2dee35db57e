"""``VectorEnv``: many environments in one Rust ``BatchEnv``, with
Gymnasium 1.x vector conventions adapted to several agents."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv as _GymnasiumVectorEnv
from gymnasium.vector.utils import batch_space

from dfaas._dfaas import BatchEnv as _BatchEnv
from dfaas.env import DEFAULT_SEED, ConfigLike, load_model

try:
    from gymnasium.vector import AutoresetMode

    SAME_STEP = AutoresetMode.SAME_STEP
except ImportError:  # gymnasium 1.0 (the one Ray 2.40 pins) names no modes yet
    SAME_STEP = "same-step"


class VectorEnv(_GymnasiumVectorEnv):
    """``num_envs`` DFaaS environments stepped together in Rust.

    Shapes (``E`` envs, ``N`` agents in ``agents`` order, ``O`` the padded
    observation width, ``W = 2 + max degree`` the padded action width):

    * observations ``[E, N, O]`` float32 — agent ``a``'s row is
      ``[input_rate, prev_input_rate, prev_forward_to_1..k,
      prev_forward_rejects_to_1..k]``, zeros after (neighbours in
      ``neighbours(a)`` order);
    * actions ``[E, N, W]`` float32 — agent ``a`` reads ``[local,
      forward_1..k, reject]`` from its first ``k + 2`` entries (the rest is
      padding and ignored; ``action_mask`` marks the entries used); rows go
      to the Rust step unchanged (its off-simplex rule);
    * rewards ``[E, N]`` float32; terminations and truncations ``[E]`` bool
      (never truncated).

    Autoreset mode ``SAME_STEP`` (``metadata["autoreset_mode"]``): an env
    whose episode ends returns its next episode's first observation in the
    same step, and ``infos["final_obs"]`` (``[E, N, O]``, zeros for envs
    that did not end) holds its terminal observation, with the mask
    ``infos["_final_obs"]``. With ``copy=True`` (the default) the arrays
    returned are new ones every step, owned by Python (one copy per step);
    with ``copy=False`` observations, rewards and terminations are the same
    three arrays every step, overwritten in place: views valid until the
    next ``step`` or ``reset``.

    ``reset(seed=s)`` resets every env (env ``i`` from a master seed
    derived from ``s`` and ``i``); without a seed it uses the previous
    seed + 1 (the first: ``DEFAULT_SEED``).

    With ``metrics=True`` every step also records the reference's per-step
    metrics of every env, returned as ``infos["metrics"]``: a dict from
    each metric's name (``input_rate``, ``action``, ``incoming_rate``, …,
    ``reward`` in float64, ``response_time_avg_local``, the network delays,
    ``observation``, ``step``) to an array whose first axis is the env —
    ``[E, N]`` for one value per agent, ``[E, N, W]`` for one per action
    entry, ``[E, N, O]`` for the observation each agent stepped from.
    """

    metadata = {"autoreset_mode": SAME_STEP}

    def __init__(
        self,
        config: ConfigLike = None,
        num_envs: int = 1,
        copy: bool = True,
        metrics: bool = False,
    ) -> None:
        self.model = load_model(config)
        self.num_envs = int(num_envs)
        self.copy = bool(copy)
        self.metrics = bool(metrics)
        self._batch = _BatchEnv(self.model, self.num_envs, self.metrics)
        self.agents = list(self.model.agents())
        n, o, w = len(self.agents), self.model.obs_width, self.model.action_width
        high = float(max(self.model.max_input_rate, 1))
        self.single_observation_space = spaces.Box(0.0, high, shape=(n, o), dtype=np.float32)
        self.single_action_space = spaces.Box(0.0, 1.0, shape=(n, w), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.action_mask = np.zeros((n, w), dtype=bool)
        for a in range(n):
            self.action_mask[a, : len(self.model.neighbours(a)) + 2] = True
        self._seed: Optional[int] = None
        # The arrays `copy=False` returns every step.
        self._observations = np.zeros((self.num_envs, n, o), dtype=np.float32)
        self._rewards = np.zeros((self.num_envs, n), dtype=np.float32)
        self._dones = np.zeros(self.num_envs, dtype=bool)

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[Mapping[str, Any]] = None
    ):
        if seed is None:
            seed = DEFAULT_SEED if self._seed is None else self._seed + 1
        self._seed = int(seed)
        observations = self._batch.reset(self._seed)
        if self.copy:
            return observations, {}
        self._observations[...] = observations
        return self._observations, {}

    def episode_seeds(self) -> list:
        """The seed of each env's current episode: ``ParallelEnv.reset(
        options={"override_seed": s})`` replays that episode."""
        return self._batch.episode_seeds()

    def step(self, actions):
        actions = np.ascontiguousarray(actions, dtype=np.float32)
        if self.copy:
            obs, rewards, dones, finals = self._batch.step(actions)
        else:
            obs, rewards, dones = self._observations, self._rewards, self._dones
            ended = self._batch.step_into(actions, obs, rewards, dones)
            finals = self._batch.final_observations() if ended else None
        infos = {}
        if self.metrics:
            infos["metrics"] = self._batch.metrics()
        if finals is not None:
            finals[~dones] = 0.0
            infos["final_obs"] = finals
            infos["_final_obs"] = dones.copy()
        truncations = np.zeros(self.num_envs, dtype=bool)
        return obs, rewards, dones, truncations, infos
