"""The DFaaS multi-agent environment (Rust) for Python.

``dfaas.ParallelEnv`` is a PettingZoo ``ParallelEnv`` over the Rust
``dfaas_core::Env``: each edge node is an agent that, every step, splits
its incoming requests into local / forward-to-each-neighbour / reject.
``dfaas.VectorEnv`` steps many of them in one Rust ``BatchEnv`` with
Gymnasium's vector conventions (arrays ``[envs, agents, ...]``).
``dfaas.Policy`` loads a ``train_ppo`` checkpoint and computes actions
(numpy in, numpy out) with the Rust inference crate.
The Rust extension (``dfaas._dfaas``) steps the environment; this layer
only builds the spaces and the dictionaries PettingZoo expects.
"""

from dfaas._dfaas import Model, Policy, evaluation_seed
from dfaas.env import ParallelEnv, load_model
from dfaas.vector import VectorEnv

__all__ = ["Model", "ParallelEnv", "Policy", "VectorEnv", "evaluation_seed", "load_model"]
