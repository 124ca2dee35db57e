//! Scaffolding shared by the `dfaas` examples and benches: random actions
//! and the reference's topologies. A dev-only crate, not part of the
//! library's API.

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
