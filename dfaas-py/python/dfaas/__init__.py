"""The DFaaS multi-agent environment (Rust) for Python.

``dfaas.ParallelEnv`` is a PettingZoo ``ParallelEnv`` over the Rust
``dfaas_core::Env``: each edge node is an agent that, every step, splits
its incoming requests into local / forward-to-each-neighbour / reject.
The Rust extension (``dfaas._dfaas``) steps the environment; this layer
only builds the spaces and the dictionaries PettingZoo expects.
"""

from dfaas._dfaas import Model
from dfaas.env import ParallelEnv, load_model

__all__ = ["Model", "ParallelEnv", "load_model"]
