"""Bad input raises with the Rust message; nothing crashes the
interpreter."""

import numpy as np
import pytest

import dfaas
from dfaas import _dfaas


def test_an_unknown_configuration_key_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="max_stepz"):
        dfaas.ParallelEnv({"network": ["a b"], "max_stepz": 10})


def test_an_invalid_value_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="max_steps"):
        dfaas.ParallelEnv({"network": ["a b"], "max_steps": 0})


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        dfaas.ParallelEnv(tmp_path / "nothing.yaml")


def test_a_config_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="config"):
        dfaas.ParallelEnv(42)


def test_actions_of_the_wrong_shape_or_agent_are_value_errors():
    env = dfaas.ParallelEnv({"network": ["a b"]})
    env.reset(seed=1)
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        env.step({"a": [0.5, 0.5], "b": [1.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="missing"):
        env.step({"a": [1.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="unknown agents"):
        env.step({"a": [1, 0, 0], "b": [1, 0, 0], "z": [1, 0, 0]})


def test_a_non_finite_action_is_a_value_error_and_the_env_goes_on():
    env = dfaas.ParallelEnv({"network": ["a b"]})
    env.reset(seed=1)
    with pytest.raises(ValueError, match="finite|NaN"):
        env.step({"a": [np.nan, 0.5, 0.5], "b": [1.0, 0.0, 0.0]})
    # Nothing changed: the episode continues from step 0.
    obs, rewards, *_ = env.step({"a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0]})
    assert env.stats()["step"].tolist() == [0, 0]


def test_the_low_level_step_checks_the_array_shape():
    model = dfaas.Model.from_json('{"network": ["a b"]}')
    env = _dfaas.Env(model)
    env.reset(1)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((3, model.action_width), dtype=np.float32))


def test_a_rust_panic_is_a_python_exception_not_an_abort():
    with pytest.raises(BaseException, match="on purpose") as caught:
        _dfaas._panic_for_tests()
    assert type(caught.value).__name__ == "PanicException"
