//! Heuristic baselines as [`Controller`]s (the centralised oracle, a
//! yardstick rather than a strategy, is [`crate::oracle`]).
//!
//! The DFaaS platform's strategies (`../shared/spec/PLATFORM_STRATEGIES.md`)
//! are re-expressed per step. A node's *capacity* C is the largest load its
//! performance table serves without a reject. Recalc and Node-Margin read
//! their neighbours' previous input rates (`prev_input_rate` of the
//! neighbours' observations) — information the platform's agents exchange
//! by gossip and that learned policies do not see.

use crate::controller::{Controller, check_batch};
use crate::dirichlet;
use crate::error::ControlError;
use crate::gossip::capacity;
use dfaas_core::EnvModel;
use dfaas_core::rng::{Xoshiro128PlusPlus, seeded};

/// Every node's [`capacity`] of `model`, into `buffer`. Recomputed at every
/// call (a scan of each table up to its first reject): a controller may act
/// on models with the same number of agents and other capacities.
fn capacities<'a>(buffer: &'a mut Vec<u32>, model: &EnvModel) -> &'a [u32] {
    buffer.clear();
    buffer.extend((0..model.num_agents()).map(|a| capacity(model, a)));
    buffer
}

/// The five heuristics, in report order: all-local, random (seeded
/// `seed`), static 60/40, Recalc, Node-Margin (what `train_ppo` and
/// `evaluate` compare PPO with, besides the [`crate::oracle`]).
#[must_use]
pub fn all(seed: u64) -> Vec<Box<dyn Controller>> {
    vec![
        Box::new(AllLocal),
        Box::new(Random::new(seed)),
        Box::new(Static6040),
        Box::new(Recalc::default()),
        Box::new(NodeMargin::default()),
    ]
}

/// Checks the batch ([`check_batch`]), then fills every env's actions by
/// calling `per_agent(env, agent, k, row)`.
fn for_each_agent(
    model: &EnvModel,
    observations: &[f32],
    actions: &mut [f32],
    mut per_agent: impl FnMut(usize, usize, usize, &mut [f32]),
) -> Result<(), ControlError> {
    check_batch(model, observations, actions)?;
    let (n, w) = (model.num_agents(), model.action_width());
    for (e, env_actions) in actions.chunks_exact_mut(n * w).enumerate() {
        for a in 0..n {
            let k = model.degree(a);
            let row = &mut env_actions[a * w..(a + 1) * w];
            row.fill(0.0);
            per_agent(e, a, k, &mut row[..k + 2]);
        }
    }
    Ok(())
}

/// Everything local (the reference's APL).
#[derive(Debug, Default)]
pub struct AllLocal;

impl Controller for AllLocal {
    fn name(&self) -> &str {
        "all_local"
    }
    fn act(
        &mut self,
        model: &EnvModel,
        obs: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        for_each_agent(model, obs, actions, |_, _, _, row| row[0] = 1.0)
    }
}

/// Uniform on the simplex (Dirichlet(1)), from a seeded stream.
#[derive(Debug)]
pub struct Random {
    rng: Xoshiro128PlusPlus,
}

impl Random {
    /// A random policy drawing from `seed`'s stream.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { rng: seeded(seed) }
    }
}

impl Controller for Random {
    fn name(&self) -> &str {
        "random"
    }
    fn act(
        &mut self,
        model: &EnvModel,
        obs: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        let ones = [1f32; dirichlet::MAX_ENTRIES];
        let rng = &mut self.rng;
        for_each_agent(model, obs, actions, |_, _, k, row| {
            // k + 2 <= MAX_ACTIONS = MAX_ENTRIES (the config's degree limit).
            let _ = dirichlet::sample(&ones[..k + 2], rng, row);
        })
    }
}

/// 60 % local, 40 % split evenly over the neighbours (all local without
/// neighbours); never rejects.
#[derive(Debug, Default)]
pub struct Static6040;

impl Controller for Static6040 {
    fn name(&self) -> &str {
        "static_60_40"
    }
    fn act(
        &mut self,
        model: &EnvModel,
        obs: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        for_each_agent(model, obs, actions, |_, _, k, row| {
            if k == 0 {
                row[0] = 1.0;
            } else {
                row[0] = 0.6;
                row[1..=k].fill(0.4 / k as f32);
            }
        })
    }
}

/// Observed input rate of agent `a` and the previous input rate of each of
/// its neighbours in env `e`.
fn rates(model: &EnvModel, obs: &[f32], e: usize, a: usize) -> (f64, Vec<(usize, f64)>) {
    let (n, ow) = (model.num_agents(), model.obs_width());
    let row = |agent: usize| &obs[(e * n + agent) * ow..(e * n + agent + 1) * ow];
    let neighbours = model.built().topology().neighbours(a);
    (
        f64::from(row(a)[0]),
        neighbours
            .iter()
            .map(|&j| (j as usize, f64::from(row(j as usize)[1])))
            .collect(),
    )
}

/// The platform's Recalc: serve up to capacity locally; send the excess to
/// neighbours in proportion to the inbound limits `⌊margin / degree⌋` they
/// offered (each at most its limit); reject what nobody takes.
#[derive(Debug, Default)]
pub struct Recalc {
    capacities: Vec<u32>,
}

impl Controller for Recalc {
    fn name(&self) -> &str {
        "recalc"
    }
    fn act(
        &mut self,
        model: &EnvModel,
        obs: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        let capacities = capacities(&mut self.capacities, model);
        for_each_agent(model, obs, actions, |e, a, k, row| {
            let (rate, neighbours) = rates(model, obs, e, a);
            if rate <= 0.0 {
                row[0] = 1.0;
                return;
            }
            let local = rate.min(f64::from(capacities[a]));
            let excess = rate - local;
            let limits: Vec<f64> = neighbours
                .iter()
                .map(|&(j, prev)| {
                    let margin = f64::from(capacities[j]) - prev;
                    if margin > 0.0 {
                        (margin / model.degree(j) as f64).floor()
                    } else {
                        0.0
                    }
                })
                .collect();
            let offered: f64 = limits.iter().sum();
            let mut forwarded = 0.0;
            for (i, limit) in limits.iter().enumerate() {
                let share = if offered > 0.0 {
                    (excess * limit / offered).min(*limit)
                } else {
                    0.0
                };
                row[1 + i] = (share / rate) as f32;
                forwarded += share;
            }
            row[0] = (local / rate) as f32;
            row[k + 1] = ((excess - forwarded).max(0.0) / rate) as f32;
        })
    }
}

/// The platform's Node-Margin: usage = load / capacity; an overloaded node
/// moves 1 % of the load it still keeps at a time to neighbours in
/// round-robin, while a neighbour's margin `(1 − usage)/degree` exceeds the
/// usage the move adds to it; it never rejects.
#[derive(Debug, Default)]
pub struct NodeMargin {
    capacities: Vec<u32>,
}

impl Controller for NodeMargin {
    fn name(&self) -> &str {
        "node_margin"
    }
    fn act(
        &mut self,
        model: &EnvModel,
        obs: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        let capacities = capacities(&mut self.capacities, model);
        for_each_agent(model, obs, actions, |e, a, k, row| {
            let (rate, neighbours) = rates(model, obs, e, a);
            let cap = f64::from(capacities[a]).max(1e-9);
            if rate <= 0.0 || rate / cap <= 1.0 {
                row[0] = 1.0;
                return;
            }
            let mut margins: Vec<Option<f64>> = neighbours
                .iter()
                .map(|&(j, prev)| {
                    let usage = prev / f64::from(capacities[j]).max(1e-9);
                    (usage <= 1.0)
                        .then(|| (1.0 - usage) / model.degree(j) as f64)
                        .filter(|m| *m > 0.0)
                })
                .collect();
            let mut moved = vec![0.0; k];
            let mut kept = rate;
            let mut i = 0;
            while kept / cap > 1.0 && margins.iter().any(Option::is_some) {
                if let Some(margin) = margins[i] {
                    let delta = 0.01 * kept;
                    let added = delta / f64::from(capacities[neighbours[i].0]).max(1e-9);
                    if margin > added {
                        margins[i] = Some(margin - added);
                        moved[i] += delta;
                        kept -= delta;
                    } else {
                        margins[i] = None;
                    }
                }
                i = (i + 1) % k;
            }
            row[0] = (kept / rate) as f32;
            for (r, m) in row[1..=k].iter_mut().zip(&moved) {
                *r = (m / rate) as f32;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::tests::model;

    #[test]
    fn heuristics_produce_points_of_the_simplex() {
        let m = model();
        let (n, ow, w) = (m.num_agents(), m.obs_width(), m.action_width());
        // Agent 0 overloaded (60), neighbours lightly loaded (5, 10).
        let mut obs = vec![0f32; n * ow];
        for (a, (now, prev)) in [(60.0, 60.0), (5.0, 5.0), (10.0, 10.0)].iter().enumerate() {
            obs[a * ow] = *now;
            obs[a * ow + 1] = *prev;
        }
        for mut c in all(1) {
            let mut actions = vec![0f32; n * w];
            c.act(&m, &obs, &mut actions).unwrap();
            // A batch that does not fit is refused, and nothing is written.
            let mut short = vec![9f32; n * w - 1];
            assert!(c.act(&m, &obs, &mut short).is_err(), "{}", c.name());
            assert!(short.iter().all(|&v| v == 9.0));
            assert!(c.act(&m, &obs[1..], &mut actions.clone()).is_err());
            for a in 0..n {
                let row = &actions[a * w..a * w + m.degree(a) + 2];
                assert!(
                    (row.iter().sum::<f32>() - 1.0).abs() < 1e-5 && row.iter().all(|&p| p >= 0.0),
                    "{}: {row:?}",
                    c.name()
                );
            }
            if c.name() == "recalc" {
                // Serves 22 locally; neighbours offer ⌊(22−5)/2⌋ = 8 and ⌊(22−10)/2⌋ = 6.
                let row = &actions[..4];
                assert!((row[0] - 22.0 / 60.0).abs() < 1e-6);
                assert!((row[1] - 8.0 / 60.0).abs() < 1e-6 && (row[2] - 6.0 / 60.0).abs() < 1e-6);
                assert!((row[3] - 24.0 / 60.0).abs() < 1e-6);
            }
            if c.name() == "node_margin" {
                assert_eq!(actions[3], 0.0, "node margin never rejects");
                assert!(actions[0] < 1.0);
            }
        }
    }

    /// A controller that acted on one model acts on another of as many
    /// agents, but other capacities, as a fresh one does.
    #[test]
    fn capacities_follow_the_model_acted_on() {
        let small = model();
        let large = {
            let config = dfaas_core::EnvConfig {
                request_memory_mb: Some(256),
                warm_service_time: Some(0.05),
                cold_service_time: Some(0.2),
                ..dfaas_core::EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
            };
            EnvModel::new(&config.build().unwrap()).unwrap()
        };
        assert_ne!(capacity(&small, 0), capacity(&large, 0));
        let (n, ow, w) = (small.num_agents(), small.obs_width(), small.action_width());
        let mut obs = vec![0f32; n * ow];
        for (a, rate) in [60.0, 5.0, 10.0].into_iter().enumerate() {
            obs[a * ow] = rate;
            obs[a * ow + 1] = rate;
        }
        let pairs: [(Box<dyn Controller>, Box<dyn Controller>); 2] = [
            (Box::new(Recalc::default()), Box::new(Recalc::default())),
            (
                Box::new(NodeMargin::default()),
                Box::new(NodeMargin::default()),
            ),
        ];
        for (mut used, mut fresh) in pairs {
            let mut actions = vec![0f32; n * w];
            used.act(&small, &obs, &mut actions).unwrap();
            let before = actions.clone();
            used.act(&large, &obs, &mut actions).unwrap();
            let mut expected = vec![0f32; n * w];
            fresh.act(&large, &obs, &mut expected).unwrap();
            assert_eq!(actions, expected, "{}", used.name());
            assert_ne!(
                actions,
                before,
                "{}: the capacities matter here",
                used.name()
            );
        }
    }
}
