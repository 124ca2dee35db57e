//! One step of a federation from its integer splits (spec §6.2–6.5): the
//! incoming list of every node, the performance model's rejects for its
//! total, their distribution over the list, and every agent's reward.
//!
//! A step's rewards depend only on that step's input rates and splits —
//! not on earlier steps, the bandwidth or any random draw — so a
//! [`StepResolver`] can score any candidate split of a step exactly as the
//! environment would (the `oracle` baseline of `dfaas-policies` searches
//! over them). [`crate::BatchEnv`] resolves its own steps with it.

use crate::alloc_prelude::*;
use crate::error::StepError;
use crate::model::EnvModel;
use crate::rejects::distribute_unchecked;
use crate::reward::{self, RewardKind};

/// Buffers of one step's resolution, and its rejects.
#[derive(Debug, Clone)]
pub struct StepResolver {
    /// Rejects `[agent][action_width]`: entry 0 the agent's local requests
    /// rejected at its own node, entry `j` (1..=k) its forward to neighbour
    /// `j` rejected there.
    rejects: Vec<u32>,
    /// Incoming list of one node, the count slot of each entry, and its
    /// rejects.
    list: Vec<u32>,
    list_source: Vec<usize>,
    list_rejects: Vec<u32>,
}

impl StepResolver {
    /// Buffers for steps of `model`.
    #[must_use]
    pub fn new(model: &EnvModel) -> Self {
        let max_list = 1 + model.degrees.iter().copied().max().unwrap_or(0);
        Self {
            rejects: vec![0; model.num_agents * model.action_width],
            list: vec![0; max_list],
            list_source: vec![0; max_list],
            list_rejects: vec![0; max_list],
        }
    }

    /// The last resolved step's rejects, `[agent][action_width]` (entry 0
    /// local, `j` the forward to neighbour `j`).
    #[must_use]
    pub fn rejects(&self) -> &[u32] {
        &self.rejects
    }

    /// Resolves one step in which agent `a` splits its `rates[a]` requests
    /// as `counts[a·w..a·w + k + 2]` (`[local, forward_1..k, reject]`, `w`
    /// the model's action width, the padding ignored) and writes each
    /// agent's reward (the model's [`RewardKind`]; f64 as the step metrics
    /// keep it) into `rewards`.
    ///
    /// # Errors
    /// Nothing is computed when the inputs are not a step of `model`:
    /// [`StepError::InputLength`] for a slice of the wrong length,
    /// [`StepError::SplitTotal`] for a split that does not sum to its rate,
    /// [`StepError::InputValue`] for a rate above the model's largest.
    pub fn resolve(
        &mut self,
        model: &EnvModel,
        rates: &[u32],
        counts: &[u32],
        rewards: &mut [f64],
    ) -> Result<(), StepError> {
        let (n, w) = (model.num_agents, model.action_width);
        for (field, expected, got) in [
            ("rates", n, rates.len()),
            ("counts", n * w, counts.len()),
            ("rewards", n, rewards.len()),
        ] {
            if expected != got {
                return Err(StepError::InputLength {
                    field,
                    expected,
                    got,
                });
            }
        }
        for (a, &rate) in rates.iter().enumerate() {
            if rate > model.max_rate {
                return Err(StepError::InputValue {
                    field: "rates",
                    index: a,
                    value: u64::from(rate),
                    max: u64::from(model.max_rate),
                });
            }
            let sum: u64 = counts[a * w..a * w + model.degrees[a] + 2]
                .iter()
                .map(|&c| u64::from(c))
                .sum();
            if sum != u64::from(rate) {
                return Err(StepError::SplitTotal {
                    agent: a,
                    sum,
                    rate,
                });
            }
        }
        self.resolve_unchecked(
            model,
            |a| rates[a],
            counts,
            |a, numerator, total| {
                rewards[a] = reward::ratio_f64(numerator, total);
            },
        );
        Ok(())
    }

    /// [`Self::resolve`] for splits known to be a step of `model` (each
    /// agent's counts sum to `rate(a)` ≤ the model's largest rate); calls
    /// `reward(a, numerator, total)` for every agent in order, its reward
    /// being `numerator / total` ([`reward::ratio`]).
    #[inline]
    pub(crate) fn resolve_unchecked(
        &mut self,
        model: &EnvModel,
        rate: impl Fn(usize) -> u32,
        counts: &[u32],
        mut reward: impl FnMut(usize, i64, u64),
    ) {
        let (n, w) = (model.num_agents, model.action_width);
        self.rejects.fill(0);
        // 2–4. Incoming list per node, model look-up, reject distribution.
        for node in 0..n {
            self.list[0] = counts[node * w];
            let mut len = 1;
            for e in model.in_offsets[node]..model.in_offsets[node + 1] {
                let slot = model.in_senders[e] * w + model.in_action_index[e];
                let c = counts[slot];
                if c > 0 {
                    self.list[len] = c;
                    self.list_source[len] = slot;
                    len += 1;
                }
            }
            let total: u32 = self.list[..len].iter().sum();
            let table = &model.tables[model.table_of[node]];
            let rejects = table.rejects()[total as usize];
            if rejects > 0 {
                distribute_unchecked(
                    model.reject_arithmetic,
                    &self.list[..len],
                    total,
                    rejects,
                    &mut self.list_rejects[..len],
                );
                self.rejects[node * w] = self.list_rejects[0];
                for e in 1..len {
                    self.rejects[self.list_source[e]] = self.list_rejects[e];
                }
            }
        }
        // 5. Reward: (local − local rejects + forwards − forward rejects − rejects) / input,
        // or the federation's served share.
        match model.reward {
            RewardKind::Reference => {
                for a in 0..n {
                    let k = model.degrees[a];
                    let numerator = reward::numerator_unchecked(
                        &counts[a * w..a * w + k + 2],
                        &self.rejects[a * w..a * w + k + 1],
                    );
                    reward(a, numerator, u64::from(rate(a)));
                }
            }
            RewardKind::Served => {
                let (served, arrived) = served_and_arrived(model, counts, &self.rejects, &rate);
                for a in 0..n {
                    reward(a, served, arrived);
                }
            }
        }
    }
}

/// The federation's served requests (every agent's split minus its
/// reject entry and the rejects of its local and forwarded requests) and
/// its arrived ones, as a numerator and total for [`reward::ratio`].
pub(crate) fn served_and_arrived(
    model: &EnvModel,
    counts: &[u32],
    rejects: &[u32],
    rate: impl Fn(usize) -> u32,
) -> (i64, u64) {
    let w = model.action_width;
    let (mut served, mut arrived) = (0i64, 0u64);
    for a in 0..model.num_agents {
        let k = model.degrees[a];
        let routed: u32 = counts[a * w..a * w + k + 1].iter().sum();
        let lost: u32 = rejects[a * w..a * w + k + 1].iter().sum();
        served += i64::from(routed - lost);
        arrived += u64::from(rate(a));
    }
    (served, arrived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchEnv;
    use crate::config::EnvConfig;

    /// The resolver scores a batch step's own splits with the rewards and
    /// rejects the batch reports.
    #[test]
    fn resolving_the_batch_split_gives_its_rewards() {
        let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
        let (n, w) = (model.num_agents(), model.action_width());
        let mut batch = BatchEnv::new(model.clone(), 2).unwrap();
        batch.reset(5).unwrap();
        let mut metrics = crate::BatchMetrics::new(&model, 2);
        let mut resolver = StepResolver::new(&model);
        let mut rewards = vec![0f64; n];
        let actions: Vec<f32> = (0..2 * n * w).map(|i| ((i * 7) % 5) as f32 + 0.5).collect();
        let mut checked = 0;
        for _ in 0..40 {
            batch.step_with_metrics(&actions, &mut metrics).unwrap();
            for m in &metrics.envs() {
                resolver
                    .resolve(&model, &m.input_rate, &m.action, &mut rewards)
                    .unwrap();
                assert_eq!(rewards, m.reward);
                assert_eq!(resolver.rejects(), &m.forward_rejects[..]);
                checked += usize::from(m.forward_rejects.iter().any(|&r| r > 0));
            }
        }
        assert!(checked > 0, "no step had rejects");
    }

    /// With `reward: served` every agent's reward is the federation's
    /// served share: the nodes' incoming requests minus their rejects, over
    /// the inputs (from the step metrics' node counts).
    #[test]
    fn the_served_reward_is_the_federations_served_share() {
        let config = EnvConfig {
            reward: RewardKind::Served,
            ..crate::config::EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
        };
        let model = EnvModel::new(&config.build().unwrap()).unwrap();
        let (n, w) = (model.num_agents(), model.action_width());
        let mut batch = BatchEnv::new(model.clone(), 2).unwrap();
        batch.reset(3).unwrap();
        let mut metrics = crate::BatchMetrics::new(&model, 2);
        let mut resolver = StepResolver::new(&model);
        let mut rewards = vec![0f64; n];
        let actions: Vec<f32> = (0..2 * n * w)
            .map(|i| ((i * 5) % 7) as f32 + 0.25)
            .collect();
        let mut lossy = 0;
        for _ in 0..30 {
            batch.step_with_metrics(&actions, &mut metrics).unwrap();
            for (e, m) in metrics.envs().iter().enumerate() {
                let served: u32 = (0..n)
                    .map(|j| m.incoming_rate[j] - m.incoming_rate_reject[j])
                    .sum();
                let arrived: u32 = m.input_rate.iter().sum();
                let share = f64::from(served) / f64::from(arrived);
                assert!(
                    m.reward.iter().all(|&r| r == share),
                    "{:?} vs {share}",
                    m.reward
                );
                let env_rewards = &batch.rewards()[e * n..(e + 1) * n];
                assert!(
                    env_rewards
                        .iter()
                        .all(|&r| r == served as f32 / arrived as f32)
                );
                resolver
                    .resolve(&model, &m.input_rate, &m.action, &mut rewards)
                    .unwrap();
                assert_eq!(rewards, m.reward);
                lossy += usize::from(
                    served + m.action.iter().skip(w - 1).step_by(w).sum::<u32>() < arrived,
                );
            }
        }
        assert!(lossy > 0, "no step lost requests to overload");
    }

    #[test]
    fn splits_that_are_not_a_step_are_refused() {
        let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
        let (n, w) = (model.num_agents(), model.action_width());
        let mut resolver = StepResolver::new(&model);
        let mut rewards = vec![0f64; n];
        let mut counts = vec![0u32; n * w];
        counts[0] = 5;
        let mut rates = vec![0u32; n];
        rates[0] = 5;
        resolver
            .resolve(&model, &rates, &counts, &mut rewards)
            .unwrap();
        // Alone at its node: the table's rejects for 5 are all its own.
        let lost = model.perf_table(0).rejects()[5];
        assert_eq!(rewards[0], f64::from(5 - lost) / 5.0);
        assert_eq!(resolver.rejects()[0], lost);
        rates[0] = 4;
        assert_eq!(
            resolver.resolve(&model, &rates, &counts, &mut rewards),
            Err(StepError::SplitTotal {
                agent: 0,
                sum: 5,
                rate: 4
            })
        );
        assert!(matches!(
            resolver.resolve(&model, &rates, &counts[1..], &mut rewards[..]),
            Err(StepError::InputLength {
                field: "counts",
                ..
            })
        ));
        let huge = model.max_input_rate() + 1;
        (counts[0], rates[0]) = (huge, huge);
        assert!(matches!(
            resolver.resolve(&model, &rates, &counts, &mut rewards),
            Err(StepError::InputValue { field: "rates", .. })
        ));
    }
}
