//! [`Env`]: one environment, reset and stepped explicitly, with every
//! per-step metric recorded.

use crate::batch::BatchEnv;
use crate::error::{ResetError, StepError};
use crate::metrics::StepMetrics;
use crate::model::EnvModel;

/// What one step returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome<'a> {
    /// Next observation `[agent][obs_width]`; after the last step the
    /// deterministic terminal observation (the last input rate as both
    /// `input_rate` and `prev_input_rate`, the last step's forwards and
    /// forward rejects).
    pub observations: &'a [f32],
    /// Reward per agent, in [−1, 1] (0 for an agent whose input rate is 0).
    pub rewards: &'a [f32],
    /// Whether the episode is over (after `max_steps` steps; never
    /// truncated).
    pub done: bool,
}

/// One DFaaS environment.
///
/// ```
/// use dfaas_core::{EnvConfig, EnvModel, Env};
/// let built = EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"]).build()?;
/// let mut env = Env::new(EnvModel::new(&built)?);
/// env.reset(Some(7))?;
/// let width = env.model().action_width();
/// // Everything local: [local, forward.., reject] = [1, 0, 0, 0] per agent.
/// let mut actions = vec![0.0f32; 3 * width];
/// for a in 0..3 { actions[a * width] = 1.0; }
/// let outcome = env.step(&actions)?;
/// assert_eq!(outcome.rewards.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Env {
    inner: BatchEnv,
    metrics: StepMetrics,
    seeded_once: bool,
}

impl Env {
    /// An environment of `model`; call [`Env::reset`] with a seed first.
    #[must_use]
    pub fn new(model: EnvModel) -> Self {
        let metrics = StepMetrics::new(&model);
        Self {
            inner: BatchEnv::with_auto_reset(model, 1, false),
            metrics,
            seeded_once: false,
        }
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &EnvModel {
        self.inner.model()
    }

    /// Draws the evaluation episode seeds (needed before the first reset
    /// in evaluation mode); see [`BatchEnv::set_evaluation_seeds`].
    pub fn set_evaluation_seeds(&mut self, master_seed: u64, episodes: usize) {
        self.inner.set_evaluation_seeds(master_seed, episodes);
    }

    /// Starts an episode. With `Some(seed)` the master stream is reseeded;
    /// with `None` the next episode seed of the current master stream is
    /// used. Returns the first observation.
    ///
    /// # Errors
    /// [`ResetError::SeedMissing`] on a first reset without a seed, and as
    /// [`BatchEnv::reset`].
    pub fn reset(&mut self, seed: Option<u64>) -> Result<&[f32], ResetError> {
        if seed.is_none() && !self.seeded_once {
            return Err(ResetError::SeedMissing);
        }
        self.inner.reset_env(0, seed, None)?;
        self.begin();
        Ok(self.inner.observations())
    }

    /// Starts an episode with an explicit episode seed (the reference's
    /// `override_seed` option); the master stream still draws one.
    ///
    /// # Errors
    /// As [`Env::reset`].
    pub fn reset_with_episode_seed(
        &mut self,
        episode_seed: u32,
        master_seed: Option<u64>,
    ) -> Result<&[f32], ResetError> {
        if master_seed.is_none() && !self.seeded_once {
            return Err(ResetError::SeedMissing);
        }
        self.inner.reset_env(0, master_seed, Some(episode_seed))?;
        self.begin();
        Ok(self.inner.observations())
    }

    fn begin(&mut self) {
        self.seeded_once = true;
        self.inner.mark_started();
    }

    /// Steps with `actions` (`[agent][action_width]`, see
    /// [`EnvModel::action_width`]) and records the step's metrics.
    ///
    /// # Errors
    /// [`StepError`] for a wrong length, a non-finite entry, or a step
    /// outside an episode; nothing changes then.
    pub fn step(&mut self, actions: &[f32]) -> Result<StepOutcome<'_>, StepError> {
        self.inner.check(actions, 0..1)?;
        // A single env never auto-resets, so this cannot fail.
        self.inner
            .step_env(0, actions, Some(&mut self.metrics))
            .map_err(|error| StepError::AutoReset { env: 0, error })?;
        Ok(StepOutcome {
            observations: self.inner.observations(),
            rewards: self.inner.rewards(),
            done: self.inner.dones()[0],
        })
    }

    /// Metrics of the last step.
    #[must_use]
    pub fn metrics(&self) -> &StepMetrics {
        &self.metrics
    }

    /// Current observation `[agent][obs_width]`.
    #[must_use]
    pub fn observations(&self) -> &[f32] {
        self.inner.observations()
    }

    /// Step index within the episode (`max_steps` when it is over).
    #[must_use]
    pub fn step_index(&self) -> usize {
        self.inner.step_index(0)
    }

    /// Seed of the current episode.
    #[must_use]
    pub fn episode_seed(&self) -> u32 {
        self.inner.episode_seed(0)
    }

    /// The current episode's input rates `[agent][step]`.
    #[must_use]
    pub fn input_rates(&self) -> &[u32] {
        self.inner.input_rates(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_prelude::*;
    use crate::config::EnvConfig;

    fn env() -> Env {
        let built = EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
            .build()
            .unwrap();
        Env::new(EnvModel::new(&built).unwrap())
    }

    #[test]
    fn first_reset_needs_a_seed_and_steps_need_a_reset() {
        let mut e = env();
        let w = e.model().action_width();
        assert_eq!(
            e.step(&vec![0.25; 3 * w]).unwrap_err(),
            StepError::NeedsReset
        );
        assert_eq!(e.reset(None).unwrap_err(), ResetError::SeedMissing);
        e.reset(Some(1)).unwrap();
        assert!(e.step(&vec![0.25; 3 * w]).is_ok());
    }

    #[test]
    fn episode_ends_after_max_steps_with_a_deterministic_terminal_observation() {
        let mut e = env();
        e.reset(Some(3)).unwrap();
        let w = e.model().action_width();
        let actions = vec![0.25; 3 * w];
        for t in 0..288 {
            let done = e.step(&actions).unwrap().done;
            assert_eq!(done, t == 287);
        }
        let last = e.observations().to_vec();
        assert_eq!(
            last[0], last[1],
            "terminal observation repeats the last input rate"
        );
        assert_eq!(e.step(&actions).unwrap_err(), StepError::NeedsReset);
        let mut again = env();
        again.reset(Some(3)).unwrap();
        for _ in 0..288 {
            again.step(&actions).unwrap();
        }
        assert_eq!(again.observations(), &last[..]);
    }

    #[test]
    fn evaluation_mode_cycles_a_fixed_list_of_episode_seeds() {
        let built = EnvConfig {
            evaluation: true,
            ..EnvConfig::default()
        }
        .build()
        .unwrap();
        let mut e = Env::new(EnvModel::new(&built).unwrap());
        assert_eq!(
            e.reset(Some(1)).unwrap_err(),
            ResetError::EvaluationSeedsMissing
        );
        e.set_evaluation_seeds(11, 3);
        e.reset(Some(1)).unwrap();
        let first: Vec<u32> = (0..3)
            .map(|_| {
                let seed = e.episode_seed();
                e.reset(None).unwrap();
                seed
            })
            .collect();
        let second: Vec<u32> = (0..3)
            .map(|_| {
                let seed = e.episode_seed();
                e.reset(None).unwrap();
                seed
            })
            .collect();
        assert_eq!(first, second, "the same evaluation episodes every cycle");
        // Reseeding the master stream does not change the evaluation cycle:
        // the cursor stands at the second seed after seven resets.
        e.reset(Some(99)).unwrap();
        assert_eq!(e.episode_seed(), first[1]);
    }

    #[test]
    fn an_input_rate_of_zero_gives_reward_zero() {
        let mut config = EnvConfig {
            max_steps: 2,
            input_rate_method: "static".into(),
            ..EnvConfig::default()
        };
        let traces = [
            ("node_0".to_string(), vec![0, 5]),
            ("node_1".to_string(), vec![3, 0]),
        ];
        config.input_rate_trace = Some(traces.into_iter().collect());
        let mut e = Env::new(EnvModel::new(&config.build().unwrap()).unwrap());
        e.reset(Some(0)).unwrap();
        let w = e.model().action_width();
        let mut actions = vec![0.0; 2 * w];
        actions[0] = 1.0;
        actions[w] = 1.0;
        assert_eq!(e.step(&actions).unwrap().rewards, &[0.0, 1.0]);
        assert_eq!(e.metrics().reward, vec![0.0, 1.0]);
        let rewards = e.step(&actions).unwrap().rewards.to_vec();
        assert_eq!(rewards[1], 0.0);
        assert!(rewards[0] > 0.0);
    }
}
