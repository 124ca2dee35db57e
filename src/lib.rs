//! # dfaas
//!
//! Multi-agent reinforcement learning for distributing serverless (FaaS)
//! load among federated edge nodes. This facade re-exports the member
//! crates and holds what the examples share:
//!
//! * [`core`] (`dfaas-core`): the deterministic environment — topology,
//!   configuration and its build step, the serverless performance model,
//!   trace generators, the step, [`core::Env`] and [`core::BatchEnv`];
//! * [`gpu`] (`dfaas-gpu`, feature `gpu`, on by default): wgpu compute
//!   kernels — the GPU batch environment;
//! * [`policies`] (`dfaas-policies`): Dirichlet PPO, baselines,
//!   evaluation, checkpoints;
//! * [`infer`] (`dfaas-infer`, `no_std`): a checkpoint's policies for
//!   inference, allocation-free actions;
//! * [`serve`]: the DFaaS platform's `/action` contract (mapping, request
//!   decoding, response encoding) for the `serve_policy` example;
//! * [`default_config`]: the embedded default scenario;
//! * [`io`]: atomic file output (from `dfaas-core`).
#![forbid(unsafe_code)]

pub use dfaas_core as core;
#[cfg(feature = "gpu")]
pub use dfaas_gpu as gpu;
pub use dfaas_infer as infer;
pub use dfaas_policies as policies;

pub mod serve;

pub use dfaas_core::io;

/// The embedded default scenario: the reference's 3-agent topology
/// (`node_0` linked to `node_1` and `node_2`, which are linked too), 288
/// steps, synthetic-sinusoidal input, and the concrete values the
/// reference's own build step draws for its default `build_seed` 42
/// (request memory 516 MB, so maximum concurrency 7; request sizes 1943 and
/// 1131 bytes; warm/cold service times 137/513 drawn in ms) — fed in
/// seconds (0.137/0.513 s), where overload is real: a node starts to
/// reject at about 23 requests per step. Bandwidth traces are generated
/// from the flat fallback unless a base trace is given.
#[must_use]
pub fn default_config() -> dfaas_core::EnvConfig {
    dfaas_core::EnvConfig {
        request_memory_mb: Some(516),
        request_input_data_size_bytes: Some(1943),
        request_output_data_size_bytes: Some(1131),
        warm_service_time: Some(0.137),
        cold_service_time: Some(0.513),
        ..dfaas_core::EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
    }
}
