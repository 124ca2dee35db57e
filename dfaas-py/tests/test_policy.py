"""A checkpoint written by ``train_ppo``: readable with
``safetensors.numpy``, loaded by ``dfaas.Policy``, whose actions through
``ParallelEnv`` replay the Rust evaluation's episode in every cell."""

import math
import subprocess

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

import dfaas
from conftest import ROOT

EXAMPLES = ROOT / "target" / "release" / "examples"


def example(name):
    path = EXAMPLES / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build --release --examples`")
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-iteration default run and the Rust evaluation of its checkpoint
    (one episode)."""
    out = tmp_path_factory.mktemp("run")
    subprocess.run(
        [example("train_ppo"), "--iterations", "2", "--eval-episodes", "1", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [example("evaluate"), "--checkpoint", str(out), "--episodes", "1"],
        check=True,
        capture_output=True,
    )
    return out


def test_the_checkpoint_is_plain_safetensors(run):
    (checkpoint,) = sorted((run / "checkpoints").iterdir())
    tensors = load_file(str(checkpoint / "policies.safetensors"))
    for p in range(3):
        weight = tensors[f"policy{p}.actor.layer0.weight"]
        assert weight.dtype == np.float32 and weight.ndim == 2
        assert tensors[f"policy{p}.obs_norm.mean"].dtype == np.float64
    policy = dfaas.Policy.load(str(checkpoint))
    assert policy.agents() == ["node_0", "node_1", "node_2"]
    # A run folder loads its latest checkpoint.
    assert dfaas.Policy.load(str(run)).agents() == policy.agents()


def test_python_actions_replay_the_rust_evaluation_episode(run):
    config = yaml.safe_load((run / "env_config.yaml").read_text())
    config["evaluation"] = True
    env = dfaas.ParallelEnv(config)
    seed = dfaas.evaluation_seed(42)
    env.set_evaluation_seeds(seed, 1)
    policy = dfaas.Policy.load(str(run))
    obs, _ = env.reset(seed=seed)
    while env.agents:
        actions = policy.act(env.observation_rows(obs))
        assert actions.shape == (3, policy.action_width)
        assert np.allclose(actions.sum(axis=1), 1.0, atol=1e-5)
        obs, *_ = env.step(env.action_dict(actions))
    stats = env.stats()
    folder = sorted((run / "checkpoints").iterdir())[-1] / "evaluation" / "ppo"
    lines = (folder / "episode_0.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert list(stats)[2:] == header[2:]
    assert len(lines) - 1 == len(stats["step"])
    for r, line in enumerate(lines[1:]):
        cells = line.split(",")
        for column, want in zip(header[2:], cells[2:]):
            got = stats[column][r]
            where = f"row {r} {column}"
            if want == "":
                assert math.isnan(got), where
            else:
                assert math.isclose(got, float(want), rel_tol=1e-12, abs_tol=1e-12), where


def test_bad_observations_and_paths_raise(run, tmp_path):
    policy = dfaas.Policy.load(str(run))
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros((2, policy.obs_width), dtype=np.float32))
    bad = np.zeros((3, policy.obs_width), dtype=np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        policy.act(bad)
    with pytest.raises(FileNotFoundError):
        dfaas.Policy.load(str(tmp_path))
    broken = tmp_path / "policies.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="policies.safetensors"):
        dfaas.Policy.load(str(broken))


def test_an_agnostic_policy_acts_for_any_node(tmp_path):
    """A 2-iteration agnostic run on the default scenario (nodes of 2
    neighbours) acts for a node of 5 neighbours and one of none; a policy of
    another layout refuses with a ValueError."""
    out = tmp_path / "agnostic"
    subprocess.run(
        [example("train_ppo"), "--layout", "agnostic", "--iterations", "2",
         "--eval-episodes", "1", "--oracle-budget", "100", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    policy = dfaas.Policy.load(str(out))
    assert policy.layout == "agnostic"
    wide = np.array([40, 38, 1, 2, 0, 3, 5, 0, 1, 0, 0, 2], dtype=np.float32)
    action = policy.act_node(wide)
    assert action.shape == (7,) and action.dtype == np.float32
    assert math.isclose(float(action.sum()), 1.0, abs_tol=1e-5)
    assert (action >= 0).all()
    alone = policy.act_node(np.array([3, 3], dtype=np.float32))
    assert alone.shape == (2,)
    with pytest.raises(ValueError, match="2 \\+ 2k"):
        policy.act_node(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        policy.act_node(np.array([1, np.nan], dtype=np.float32))
    assert not policy.gossip
    with pytest.raises(ValueError, match="trained without gossip"):
        policy.act_node(np.array([3, 3], dtype=np.float32), np.array([22], dtype=np.float32))


def test_an_agnostic_policy_with_gossip_reads_its_neighbours(tmp_path):
    """A 2-iteration agnostic run with --gossip: the policy says so, acts
    for a node given its gossip (its capacity, then each neighbour's
    previous input rate, capacity and degree), reads a neighbour's load,
    and refuses gossip that is missing or does not fit."""
    out = tmp_path / "gossip"
    subprocess.run(
        [example("train_ppo"), "--layout", "agnostic", "--gossip", "--iterations", "2",
         "--eval-episodes", "1", "--oracle-budget", "100", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    policy = dfaas.Policy.load(str(out))
    assert policy.layout == "agnostic" and policy.gossip
    node = np.array([60, 58, 10, 10, 0, 0], dtype=np.float32)
    idle = np.array([22, 0, 22, 2, 20, 22, 2], dtype=np.float32)
    loaded = np.array([22, 80, 22, 2, 20, 22, 2], dtype=np.float32)
    action = policy.act_node(node, idle)
    assert action.shape == (4,)
    assert math.isclose(float(action.sum()), 1.0, abs_tol=1e-5)
    assert not np.array_equal(action, policy.act_node(node, loaded))
    with pytest.raises(ValueError, match="needs 1 \\+ 3k = 7 values"):
        policy.act_node(node)
    with pytest.raises(ValueError, match="expected 1 \\+ 3k = 7 values"):
        policy.act_node(node, idle[:4])


def test_act_node_needs_the_agnostic_layout(run):
    policy = dfaas.Policy.load(str(run))
    assert policy.layout == "independent"
    with pytest.raises(ValueError, match="agnostic"):
        policy.act_node(np.array([1, 1, 0, 0, 0, 0], dtype=np.float32))

