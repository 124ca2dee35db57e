"""``dfaas.VectorEnv``: Gymnasium vector conventions over the Rust
``BatchEnv``, checked against ``ParallelEnv`` (the Rust ``Env``)."""

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import dfaas

SHORT = {"network": ["a b c", "b"], "max_steps": 5}


def test_spaces_and_shapes_follow_the_gymnasium_conventions():
    env = dfaas.VectorEnv(SHORT, num_envs=4)
    n, o, w = 3, env.model.obs_width, env.model.action_width
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.single_observation_space.shape == (n, o)
    assert env.observation_space.shape == (4, n, o)
    assert env.action_space.shape == (4, n, w)
    assert env.action_mask.tolist() == [
        [True] * 4,
        [True, True, True, False],
        [True, True, True, False],
    ]
    obs, infos = env.reset(seed=1)
    assert infos == {}
    assert obs.shape == (4, n, o) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    for _ in range(12):
        obs, rewards, terminations, truncations, infos = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert rewards.shape == (4, n) and rewards.dtype == np.float32
        assert terminations.shape == truncations.shape == (4,)
        assert not truncations.any()


def test_the_vector_env_equals_parallel_envs_with_the_same_seeds_across_autoresets():
    """Env i of the batch is a ParallelEnv reset with the batch's derived
    seed; its terminal observations come back in infos."""
    envs = 3
    vector = dfaas.VectorEnv(SHORT, num_envs=envs)
    obs, _ = vector.reset(seed=7)
    # The batch's per-env episodes: identify them through the first
    # observations, then replay each in a ParallelEnv by its episode seed.
    singles = [dfaas.ParallelEnv(SHORT) for _ in range(envs)]
    rng = np.random.default_rng(3)
    seen_final = 0
    names = singles[0].possible_agents
    for i, single in enumerate(singles):
        first, _ = single.reset(seed=0, options={"override_seed": vector.episode_seeds()[i]})
        for a, agent in enumerate(names):
            row = obs[i, a]
            assert row[0] == first[agent]["input_rate"][0]
    for step in range(13):
        actions = rng.dirichlet(np.ones(4), size=(envs, 3)).astype(np.float32)
        obs, rewards, terminations, _, infos = vector.step(actions)
        for i, single in enumerate(singles):
            width = {a: single.action_space(a).shape[0] for a in names}
            got = single.step({a: actions[i, j, : width[a]] for j, a in enumerate(names)})
            single_obs, single_rewards, single_terms = got[0], got[1], got[2]
            assert [rewards[i, j] for j in range(3)] == pytest.approx(
                [single_rewards[a] for a in names], abs=0.0
            )
            assert terminations[i] == all(single_terms.values())
            if terminations[i]:
                seen_final += 1
                assert infos["_final_obs"][i]
                final = infos["final_obs"][i]
                for j, a in enumerate(names):
                    for k, key in enumerate(single._keys[a]):
                        assert final[j, k] == single_obs[a][key][0], (step, i, a, key)
                first, _ = single.reset(
                    seed=0, options={"override_seed": vector.episode_seeds()[i]}
                )
                single_obs = first
            elif "_final_obs" in infos:
                assert not infos["_final_obs"][i]
                assert not infos["final_obs"][i].any()
            for j, a in enumerate(names):
                for k, key in enumerate(single._keys[a]):
                    assert obs[i, j, k] == single_obs[a][key][0], (step, i, a, key)
    assert seen_final == 2 * envs


def test_a_reset_without_a_seed_takes_the_next_one():
    env = dfaas.VectorEnv(SHORT, num_envs=2)
    first, _ = env.reset()
    second, _ = env.reset()
    again = dfaas.VectorEnv(SHORT, num_envs=2)
    assert np.array_equal(again.reset(seed=0)[0], first)
    assert np.array_equal(again.reset(seed=1)[0], second)


def test_bad_shapes_and_values_raise_with_the_rust_message():
    env = dfaas.VectorEnv(SHORT, num_envs=2)
    env.reset(seed=1)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((3, 3, 4), dtype=np.float32))
    bad = np.full((2, 3, 4), 0.25, dtype=np.float32)
    bad[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="finite|inf"):
        env.step(bad)
    with pytest.raises(ValueError, match="num_envs"):
        dfaas.VectorEnv(SHORT, num_envs=0)


def test_without_copies_the_same_arrays_come_back_with_the_same_values():
    views = dfaas.VectorEnv(SHORT, num_envs=3, copy=False)
    copies = dfaas.VectorEnv(SHORT, num_envs=3)
    first, _ = views.reset(seed=4)
    assert np.array_equal(first, copies.reset(seed=4)[0])
    rng = np.random.default_rng(8)
    returned = None
    for _ in range(12):
        actions = rng.dirichlet(np.ones(4), size=(3, 3)).astype(np.float32)
        got = views.step(actions)
        want = copies.step(actions)
        for g, w in zip(got[:4], want[:4]):
            assert np.array_equal(g, w)
        assert got[4].keys() == want[4].keys()
        for key in got[4]:
            assert np.array_equal(got[4][key], want[4][key])
        if returned is not None:
            assert all(a is b for a, b in zip(got[:3], returned)), "the same arrays"
        returned = got[:3]
    assert got[0] is first, "reset's array too"


def test_recorded_metrics_are_each_envs_own_and_its_stats():
    """``infos["metrics"]``: shapes, each split conserving the agent's
    input, the step's rewards, and every per-agent count and the reward
    equal to the single env's stats table over the same episode."""
    envs = 3
    vector = dfaas.VectorEnv(SHORT, num_envs=envs, metrics=True)
    n, o, w = 3, vector.model.obs_width, vector.model.action_width
    obs, _ = vector.reset(seed=11)
    singles = [dfaas.ParallelEnv(SHORT) for _ in range(envs)]
    names = singles[0].possible_agents
    for i, single in enumerate(singles):
        single.reset(seed=0, options={"override_seed": vector.episode_seeds()[i]})
    rng = np.random.default_rng(5)
    recorded = []
    for step in range(SHORT["max_steps"]):
        actions = rng.dirichlet(np.ones(4), size=(envs, n)).astype(np.float32)
        before = obs.copy()
        obs, rewards, _, _, infos = vector.step(actions)
        m = infos["metrics"]
        assert m["step"].tolist() == [step] * envs
        assert m["input_rate"].shape == (envs, n) and m["input_rate"].dtype == np.uint32
        assert m["action"].shape == m["forward_rejects"].shape == (envs, n, w)
        assert m["reward"].dtype == np.float64
        assert m["network_forward_delay_avg_to"].shape == (envs, n, w)
        assert np.array_equal(m["observation"], before)
        for j in range(n):
            used = vector.action_mask[j]
            assert (m["action"][:, j][:, used].sum(axis=1) == m["input_rate"][:, j]).all()
        assert rewards == pytest.approx(m["reward"], abs=1e-6)
        for i, single in enumerate(singles):
            width = {a: single.action_space(a).shape[0] for a in names}
            single.step({a: actions[i, j, : width[a]] for j, a in enumerate(names)})
        recorded.append(m)
    assert any(m["incoming_rate_reject"].any() for m in recorded), "no step had rejects"
    keys = [
        "incoming_rate",
        "incoming_rate_local",
        "incoming_rate_forward",
        "incoming_rate_reject",
        "incoming_rate_local_reject",
        "incoming_rate_forward_reject",
        "forward_reject_rate",
        "reward",
    ]
    for i, single in enumerate(singles):
        stats = single.stats()
        assert len(stats["step"]) == SHORT["max_steps"] * n
        for row, (t, agent) in enumerate(zip(stats["step"], stats["agent"])):
            a = names.index(agent)
            for key in keys:
                assert recorded[t][key][i, a] == stats[key][row], (i, t, agent, key)


def test_metrics_are_refused_unless_recorded():
    vector = dfaas.VectorEnv(SHORT, num_envs=2)
    vector.reset(seed=1)
    _, _, _, _, infos = vector.step(vector.action_space.sample())
    assert "metrics" not in infos
    with pytest.raises(ValueError, match="record_metrics=True"):
        vector._batch.metrics()
