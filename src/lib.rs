//! # dfaas
//!
//! Multi-agent reinforcement learning for distributing serverless (FaaS)
//! load among federated edge nodes. This facade re-exports the member crates:
//!
//! * [`core`] (`dfaas-core`): the deterministic environment — topology,
//!   configuration and its build step, the serverless performance model,
//!   trace generators, the step, [`core::Env`] and [`core::BatchEnv`].
//! * [`gpu`] (`dfaas-gpu`): GPU compute kernels (not built yet).
//! * [`policies`] (`dfaas-policies`): policies and PPO (not built yet).
#![forbid(unsafe_code)]

pub use dfaas_core as core;
pub use dfaas_gpu as gpu;
pub use dfaas_policies as policies;
