"""``dfaas.ParallelEnv`` against PettingZoo's API test, its own contract
(spaces, episode end, seeds) and the Rust environment's behaviour."""

import math

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import dfaas

TWO = {"network": ["node_0 node_1"]}
FIVE = {"network": ["a b c", "b d", "c e", "d e"]}


@pytest.mark.parametrize("config", [TWO, None, FIVE], ids=["2", "3", "5"])
def test_pettingzoos_parallel_api_test_passes(config):
    parallel_api_test(dfaas.ParallelEnv(config), num_cycles=1000)


def test_spaces_are_cached_and_follow_the_topology():
    env = dfaas.ParallelEnv(FIVE)
    assert env.possible_agents == ["a", "b", "c", "d", "e"]
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
    # a's neighbours are b and c; d's are b and e (links are undirected).
    # (gymnasium's Dict orders its keys.)
    assert set(env.observation_space("a").spaces) == {
        "input_rate",
        "prev_input_rate",
        "prev_forward_to_b",
        "prev_forward_to_c",
        "prev_forward_rejects_to_b",
        "prev_forward_rejects_to_c",
    }
    assert {k for k in env.observation_space("d").spaces if "rejects" in k} == {
        "prev_forward_rejects_to_b",
        "prev_forward_rejects_to_e",
    }
    assert env.action_space("a").shape == (4,)
    assert env.action_space("d").shape == (4,)
    box = env.observation_space("a")["input_rate"]
    assert box.shape == (1,) and box.dtype == np.float32
    assert box.high[0] == env.model.max_input_rate


def test_every_observation_is_in_its_space_and_the_episode_ends():
    env = dfaas.ParallelEnv(TWO)
    obs, infos = env.reset(seed=3)
    assert set(obs) == set(infos) == {"node_0", "node_1"}
    steps = 0
    while env.agents:
        actions = {a: env.action_space(a).sample() for a in env.agents}
        obs, rewards, terminations, truncations, infos = env.step(actions)
        steps += 1
        for agent, o in obs.items():
            assert env.observation_space(agent).contains(o), (steps, agent, o)
            assert -1.0 <= rewards[agent] <= 1.0
        assert not any(truncations.values())
        last = steps == env.model.max_steps
        assert all(t == last for t in terminations.values())
    assert steps == env.model.max_steps == 288
    assert env.agents == []
    with pytest.raises(ValueError, match="call reset"):
        env.step({})


def trajectory(env, seed, steps=40, action_seed=11):
    """Observations and rewards of `steps` steps with actions drawn from a
    fixed numpy stream."""
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        actions = {
            a: rng.dirichlet(np.ones(env.action_space(a).shape[0])).astype(np.float32)
            for a in env.agents
        }
        obs, rewards, *_ = env.step(actions)
        out.append((obs, rewards))
    return out


def test_the_same_seed_gives_the_same_trajectory_and_another_seed_another():
    a = trajectory(dfaas.ParallelEnv(), seed=5)
    b = trajectory(dfaas.ParallelEnv(), seed=5)
    c = trajectory(dfaas.ParallelEnv(), seed=6)
    assert repr(a) == repr(b)
    assert repr(a) != repr(c)


def test_a_reset_without_a_seed_continues_the_master_stream():
    env = dfaas.ParallelEnv()
    first, _ = env.reset()
    second, _ = env.reset()
    again = dfaas.ParallelEnv()
    assert repr(again.reset(seed=dfaas.env.DEFAULT_SEED)[0]) == repr(first)
    assert repr(again.reset()[0]) == repr(second)
    assert repr(first) != repr(second)
    # Unknown option keys are ignored; override_seed sets the episode seed.
    one, _ = env.reset(seed=1, options={"override_seed": 1234, "unknown": 0})
    two, _ = dfaas.ParallelEnv().reset(seed=2, options={"override_seed": 1234})
    assert repr(one) == repr(two)


def test_the_stats_table_matches_the_steps_taken():
    env = dfaas.ParallelEnv(TWO)
    env.reset(seed=9)
    rewards = []
    for _ in range(5):
        _, r, *_ = env.step({a: [1.0, 0.0, 0.0] for a in env.agents})
        rewards.append([r["node_0"], r["node_1"]])
    stats = env.stats()
    assert list(stats["step"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert stats["agent"] == ["node_0", "node_1"] * 5
    # Everything local: nothing forwarded, rewards as the step returned.
    assert np.all(stats["action_forward"] == 0)
    np.testing.assert_allclose(stats["reward"], np.ravel(rewards), rtol=1e-7)


def test_a_conformance_episode_replayed_through_python_equals_its_stats(conformance, tmp_path):
    folder = conformance / "episodes" / "three_nodes_s"
    model, actions = dfaas.Model.from_episode(str(folder))
    env = dfaas.ParallelEnv(model)
    observed = [env.reset(seed=0)[0]]
    for step_actions in actions:
        observed.append(
            env.step(
                {
                    a: step_actions[i, : env.action_space(a).shape[0]]
                    for i, a in enumerate(env.possible_agents)
                }
            )[0]
        )
    stats = env.stats()
    # The observation each agent acted on, key by key, is the reference's
    # `observation_<key>` of that step.
    for r, (step, agent) in enumerate(zip(stats["step"], stats["agent"])):
        for key, value in observed[step][agent].items():
            assert value[0] == stats[f"observation_{key}"][r], (step, agent, key)
    lines = (folder / "stats.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:2] == ["step", "agent"]
    assert list(stats)[2:] == header[2:], "column set and order"
    assert len(lines) - 1 == len(stats["step"]) == 288 * 3
    for r, line in enumerate(lines[1:]):
        cells = line.split(",")
        assert int(cells[0]) == stats["step"][r] and cells[1] == stats["agent"][r]
        for column, want in zip(header[2:], cells[2:]):
            got = stats[column][r]
            where = f"step {cells[0]} {cells[1]} {column}"
            if want == "":
                assert math.isnan(got), f"{where}: {got}, want empty"
            elif column.startswith("response_time"):
                assert math.isclose(got, float(want), rel_tol=1e-9, abs_tol=1e-12), where
            else:
                assert math.isclose(got, float(want), rel_tol=1e-15, abs_tol=0.0), where
    # The same table as a file, in the reference's format.
    out = tmp_path / "stats.csv"
    env.write_stats_csv(out)
    written = out.read_text().splitlines()
    assert written[0] == lines[0]
    assert len(written) == len(lines)
