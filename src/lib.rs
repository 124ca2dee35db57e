//! # dfaas
//!
//! Multi-agent reinforcement learning for distributing serverless (FaaS)
//! load among federated edge nodes. This facade re-exports the member
//! crates and holds what the examples share:
//!
//! * [`core`] (`dfaas-core`): the deterministic environment — topology,
//!   configuration and its build step, the serverless performance model,
//!   trace generators, the step, [`core::Env`] and [`core::BatchEnv`];
//! * [`gpu`] (`dfaas-gpu`): GPU compute kernels (not built yet);
//! * [`policies`] (`dfaas-policies`): policies and PPO (not built yet);
//! * [`default_config`]: the embedded default scenario;
//! * [`io`]: atomic file output.
#![forbid(unsafe_code)]

pub use dfaas_core as core;
pub use dfaas_gpu as gpu;
pub use dfaas_policies as policies;

pub mod io;

/// The embedded default scenario: the reference's 3-agent topology
/// (`node_0` linked to `node_1` and `node_2`, which are linked too),
/// 288 steps, synthetic-sinusoidal input, service times drawn in seconds
/// (where overload is real), every other value the reference's default.
#[must_use]
pub fn default_config() -> dfaas_core::EnvConfig {
    dfaas_core::EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
}
