"""``ParallelEnv``: the Rust environment as a PettingZoo parallel env."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Union

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv as _PettingZooParallelEnv

from dfaas._dfaas import Env as _Env
from dfaas._dfaas import Model

#: The master seed of a first ``reset()`` without a seed.
DEFAULT_SEED = 0

ConfigLike = Union[None, str, "os.PathLike[str]", Mapping[str, Any], Model]


def load_model(config: ConfigLike = None) -> Model:
    """The built model of ``config``: ``None`` for the embedded default (3
    agents, seconds regime), a path to a YAML/JSON file, a mapping with the
    reference's keys (e.g. ``{"network": ["node_0 node_1"]}``), or a
    ``Model`` as it is. Unknown keys and invalid values raise
    ``ValueError`` with the Rust message; a missing file
    ``FileNotFoundError``."""
    if config is None:
        return Model.default()
    if isinstance(config, Model):
        return config
    if isinstance(config, (str, os.PathLike)):
        return Model.from_file(os.fspath(config))
    if isinstance(config, Mapping):
        return Model.from_json(json.dumps(dict(config)))
    raise TypeError(
        f"config must be None, a path or a mapping, not {type(config).__name__}"
    )


class ParallelEnv(_PettingZooParallelEnv):
    """The DFaaS environment as a PettingZoo ``ParallelEnv``.

    Agents are the configuration's nodes. An agent with ``k`` neighbours
    observes a ``Dict`` of ``Box(shape=(1,), float32)`` entries —
    ``input_rate``, ``prev_input_rate``, ``prev_forward_to_<n>`` and
    ``prev_forward_rejects_to_<n>`` for each neighbour ``n`` — in requests
    per step, bounded by the configuration's largest input rate; it acts
    with a ``Box(0, 1, (k + 2,), float32)``: the shares ``[local,
    forward to each neighbour, reject]``. Actions go to the Rust step
    unchanged (its off-simplex rule: clamp, remainder, rescale).

    An episode lasts ``max_steps`` steps; after the last one every agent is
    terminated (never truncated) and ``agents`` is empty until the next
    ``reset``. ``reset(seed=s)`` reseeds the master stream; without a seed
    it continues it (the first one uses ``DEFAULT_SEED``);
    ``options={"override_seed": e}`` sets the episode's own seed, as the
    reference's option does. Other option keys are ignored.
    """

    metadata = {"name": "dfaas_v0", "render_modes": []}

    def __init__(self, config: ConfigLike = None, **options: Any) -> None:
        if options:
            unknown = ", ".join(sorted(options))
            raise TypeError(f"unknown ParallelEnv options: {unknown}")
        self.model = load_model(config)
        self._env = _Env(self.model)
        self.render_mode = None
        self.possible_agents = list(self.model.agents())
        self.agents = []
        self._neighbours = [
            list(self.model.neighbours(i)) for i in range(len(self.possible_agents))
        ]
        high = float(max(self.model.max_input_rate, 1))
        self._observation_spaces = {}
        self._action_spaces = {}
        self._keys = dict(zip(self.possible_agents, self._env.observation_keys()))
        for agent, neighbours in zip(self.possible_agents, self._neighbours):
            keys = self._keys[agent]
            box = lambda: spaces.Box(0.0, high, shape=(1,), dtype=np.float32)  # noqa: E731
            self._observation_spaces[agent] = spaces.Dict({k: box() for k in keys})
            self._action_spaces[agent] = spaces.Box(
                0.0, 1.0, shape=(len(neighbours) + 2,), dtype=np.float32
            )
        self._agent_set = frozenset(self.possible_agents)
        self._widths = [len(n) + 2 for n in self._neighbours]
        self._seeded = False

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self._action_spaces[agent]

    def reset(
        self, seed: Optional[int] = None, options: Optional[Mapping[str, Any]] = None
    ):
        if seed is None and not self._seeded:
            seed = DEFAULT_SEED
        episode_seed = (options or {}).get("override_seed")
        rows = self._env.reset(seed, episode_seed)
        self._seeded = True
        self.agents = list(self.possible_agents)
        observations = self._observations(rows)
        return observations, {a: {} for a in self.agents}

    def step(self, actions: Mapping[str, Any]):
        if not self.agents:
            raise ValueError("step after the episode ended: call reset first")
        if actions.keys() != self._agent_set:
            missing = [a for a in self.agents if a not in actions]
            unknown = [a for a in actions if a not in self._agent_set]
            raise ValueError(f"actions: missing for agents {missing}, unknown agents {unknown}")
        # The Rust side reads each agent's k + 2 shares (a float32 array or
        # any sequence of numbers) and builds the observation dicts.
        observations, reward, done = self._env.step_dicts(
            actions if type(actions) is dict else dict(actions)
        )
        agents = self.agents
        terminations = dict.fromkeys(agents, done)
        truncations = dict.fromkeys(agents, False)
        infos = {a: {} for a in agents}
        if done:
            self.agents = []
        return observations, reward, terminations, truncations, infos

    def set_evaluation_seeds(self, master_seed: int, episodes: int) -> None:
        """Draws the evaluation episode seeds from ``master_seed``, as the
        Rust evaluation does (``dfaas.evaluation_seed(training_seed)`` is a
        run's); needed before the first reset of a configuration with
        ``evaluation: true``, whose resets then play those episodes in
        turn."""
        self._env.set_evaluation_seeds(master_seed, episodes)

    def observation_rows(self, observations: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
        """The observation dicts of every agent as the padded rows
        ``[agents, obs_width]`` that ``dfaas.Policy.act`` takes."""
        rows = np.zeros((len(self.possible_agents), self.model.obs_width), dtype=np.float32)
        for i, agent in enumerate(self.possible_agents):
            for j, key in enumerate(self._keys[agent]):
                rows[i, j] = observations[agent][key][0]
        return rows

    def action_dict(self, rows: np.ndarray) -> dict:
        """Padded action rows ``[agents, action_width]`` (``dfaas.Policy.act``'s)
        as the per-agent actions ``step`` takes."""
        return {
            agent: rows[i, : self._widths[i]] for i, agent in enumerate(self.possible_agents)
        }

    def stats(self) -> dict:
        """The current episode's per-step metrics as the reference's stats
        table: a dict of columns (``step``, ``agent``, then every column of
        its ``stats.csv``; NaN where the reference leaves a cell empty), one
        row per step and agent — ``pandas.DataFrame(env.stats())`` wraps
        it."""
        return self._env.stats()

    def write_stats_csv(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the current episode's ``stats.csv`` (the reference's
        format) to ``path``, atomically."""
        self._env.write_stats_csv(os.fspath(path))

    def _observations(self, rows: np.ndarray) -> dict:
        # Views of `rows` (a new array every step: nothing aliases), each
        # entry of shape (1,).
        entries = rows[:, :, None]
        return {
            agent: {key: entries[i, j] for j, key in enumerate(self._keys[agent])}
            for i, agent in enumerate(self.agents)
        }
