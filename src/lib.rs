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
//! * [`io`]: atomic file output (from `dfaas-core`).
#![forbid(unsafe_code)]

pub use dfaas_core as core;
pub use dfaas_gpu as gpu;
pub use dfaas_policies as policies;

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

/// Ends an example's `main`: success, or the error (with its chain, for
/// `anyhow` errors) on stderr and a failure exit code — never a panic.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Actions `[env][agent][action_width]` drawn uniformly on each agent's
/// simplex (Dirichlet(1), the reference's random actions) from a stream
/// seeded `seed` — for benchmarks and examples.
#[must_use]
pub fn random_actions(model: &dfaas_core::EnvModel, envs: usize, seed: u64) -> Vec<f32> {
    let (n, w) = (model.num_agents(), model.action_width());
    let mut rng = dfaas_core::rng::seeded(seed);
    let mut actions = vec![0f32; envs * n * w];
    for (i, row) in actions.chunks_exact_mut(w).enumerate() {
        let k = model.degree(i % n) + 2;
        let draws: Vec<f64> = (0..k)
            .map(|_| -(1.0 - dfaas_core::rng::uniform01(&mut rng)).ln())
            .collect();
        let total: f64 = draws.iter().sum();
        row[..k]
            .iter_mut()
            .zip(&draws)
            .for_each(|(p, d)| *p = (d / total) as f32);
    }
    actions
}

/// Adjacency lines of the reference's `configs/env/{two,three,five}_agents.yaml`
/// topologies, for `agents` = 2, 3 or 5 (`None` otherwise).
#[must_use]
pub fn reference_topology(agents: usize) -> Option<&'static [&'static str]> {
    match agents {
        2 => Some(&["node_0 node_1"]),
        3 => Some(&["node_0 node_1 node_2", "node_1 node_2"]),
        5 => Some(&[
            "node_0 node_1 node_2",
            "node_3 node_2 node_0",
            "node_1 node_4",
        ]),
        _ => None,
    }
}
