//! [`BatchEnv`]: N environments of one [`EnvModel`] in one
//! struct-of-arrays layout, stepped together, with auto-reset.
//!
//! Layouts (all flat, row-major):
//! * actions `[env][agent][action_width]` (`f32`), see
//!   [`EnvModel::action_width`];
//! * observations `[env][agent][obs_width]` (`f32`), see
//!   [`EnvModel::obs_width`];
//! * rewards `[env][agent]` (`f32`), dones `[env]`.
//!
//! When an env's episode ends, the step reports `done` for it and — with
//! auto-reset — starts its next episode at once: the observation returned
//! for it is the first of the new episode (the terminated episode needs no
//! bootstrap value, since episodes terminate and are never truncated).

use crate::alloc_prelude::*;
use crate::error::{ResetError, StepError};
use crate::metrics::{StepMetrics, reward_numerator};
use crate::model::EnvModel;
use crate::rejects::distribute_rejects;
use crate::rng::{Xoshiro128PlusPlus, draw_episode_seed, env_master_seed, seeded};
use crate::split::split_finite;

/// Reusable per-step buffers (one env at a time).
#[derive(Debug, Clone)]
struct Scratch {
    /// Split counts `[agent][action_width]`.
    counts: Vec<u32>,
    /// Fractional parts of one agent's split.
    fractions: Vec<f32>,
    /// Rejects `[agent][action_width]`: entry 0 the agent's local requests
    /// rejected at its own node, entries 1..=k its forwards rejected there.
    rejects: Vec<u32>,
    /// Incoming list of one node, its senders and its rejects.
    list: Vec<u32>,
    list_source: Vec<usize>,
    list_rejects: Vec<u32>,
}

/// Everything that changes while a [`BatchEnv`] runs, to save and restore
/// it exactly (checkpoints): random streams, episodes, steps, outputs.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    all(feature = "serde", feature = "std"),
    derive(serde::Serialize, serde::Deserialize)
)]
pub struct BatchEnvState {
    /// `[env][agent][step]`.
    pub input_rates: Vec<u32>,
    /// Current step per env.
    pub steps: Vec<usize>,
    /// Master random stream per env.
    pub masters: Vec<Xoshiro128PlusPlus>,
    /// Current episode seed per env.
    pub episode_seeds: Vec<u32>,
    /// Evaluation seed list.
    pub evaluation_seeds: Vec<u32>,
    /// Position of each env in that list.
    pub evaluation_cursor: Vec<usize>,
    /// Observations `[env][agent][obs_width]`.
    pub obs: Vec<f32>,
    /// Last rewards `[env][agent]`.
    pub rewards: Vec<f32>,
    /// Last dones.
    pub dones: Vec<bool>,
    /// Whether the batch was reset at least once.
    pub started: bool,
}

/// N environments stepped together (CPU).
#[derive(Debug, Clone)]
pub struct BatchEnv {
    model: EnvModel,
    num_envs: usize,
    auto_reset: bool,
    /// `[env][agent][step]`.
    input_rates: Vec<u32>,
    /// Current step per env; `max_steps` once an episode is over.
    steps: Vec<usize>,
    masters: Vec<Xoshiro128PlusPlus>,
    episode_seeds: Vec<u32>,
    evaluation_seeds: Vec<u32>,
    evaluation_cursor: Vec<usize>,
    obs: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<bool>,
    started: bool,
    scratch: Scratch,
}

impl BatchEnv {
    /// `num_envs` environments of `model`, with auto-reset. Call
    /// [`BatchEnv::reset`] before the first step.
    #[must_use]
    pub fn new(model: EnvModel, num_envs: usize) -> Self {
        Self::with_auto_reset(model, num_envs, true)
    }

    pub(crate) fn with_auto_reset(model: EnvModel, num_envs: usize, auto_reset: bool) -> Self {
        let n = model.num_agents();
        let w = model.action_width();
        let max_list = 1 + model.degrees.iter().copied().max().unwrap_or(0);
        Self {
            input_rates: vec![0; num_envs * n * model.max_steps()],
            steps: vec![model.max_steps(); num_envs],
            masters: vec![seeded(0); num_envs],
            episode_seeds: vec![0; num_envs],
            evaluation_seeds: Vec::new(),
            evaluation_cursor: (0..num_envs).collect(),
            obs: vec![0.0; num_envs * n * model.obs_width()],
            rewards: vec![0.0; num_envs * n],
            dones: vec![false; num_envs],
            started: false,
            scratch: Scratch {
                counts: vec![0; n * w],
                fractions: vec![0.0; w],
                rejects: vec![0; n * w],
                list: vec![0; max_list],
                list_source: vec![0; max_list],
                list_rejects: vec![0; max_list],
            },
            model,
            num_envs,
            auto_reset,
        }
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &EnvModel {
        &self.model
    }

    /// Number of environments.
    #[must_use]
    pub fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// Draws the evaluation episode seeds: `episodes` seeds from a stream
    /// seeded `master_seed`. Env `i` cycles through them starting at `i mod
    /// episodes`, so a batch of `episodes` envs covers them all at once.
    /// Needed before the first reset in evaluation mode.
    pub fn set_evaluation_seeds(&mut self, master_seed: u64, episodes: usize) {
        let mut rng = seeded(master_seed);
        self.evaluation_seeds = (0..episodes).map(|_| draw_episode_seed(&mut rng)).collect();
        self.evaluation_cursor = (0..self.num_envs).map(|i| i % episodes.max(1)).collect();
    }

    /// Resets every env: env `i` gets the master seed
    /// [`env_master_seed`]`(seed, i)` and starts an episode.
    ///
    /// # Errors
    /// [`ResetError`] in evaluation mode without evaluation seeds, or when
    /// a `real` trace is unusable.
    pub fn reset(&mut self, seed: u64) -> Result<&[f32], ResetError> {
        for i in 0..self.num_envs {
            self.reset_env(i, Some(env_master_seed(seed, i as u64)), None)?;
        }
        self.started = true;
        Ok(&self.obs)
    }

    /// Resets env `i`: reseeds its master stream when `master_seed` is given,
    /// draws the next episode seed from it (discarded when `episode_seed`
    /// overrides it or in evaluation mode) and generates the episode.
    pub(crate) fn reset_env(
        &mut self,
        i: usize,
        master_seed: Option<u64>,
        episode_seed: Option<u32>,
    ) -> Result<(), ResetError> {
        if let Some(seed) = master_seed {
            self.masters[i] = seeded(seed);
        }
        // The master stream draws a seed at every reset, used or not; an
        // explicit episode seed overrides it, and evaluation mode overrides
        // both with its cycle (as the reference does).
        let drawn = draw_episode_seed(&mut self.masters[i]);
        let mut seed = episode_seed.unwrap_or(drawn);
        if self.model.built.evaluation() {
            if self.evaluation_seeds.is_empty() {
                return Err(ResetError::EvaluationSeedsMissing);
            }
            let cursor = self.evaluation_cursor[i];
            self.evaluation_cursor[i] = (cursor + 1) % self.evaluation_seeds.len();
            seed = self.evaluation_seeds[cursor];
        }
        self.start_episode(i, seed)
    }

    fn start_episode(&mut self, i: usize, episode_seed: u32) -> Result<(), ResetError> {
        let (n, s) = (self.model.num_agents, self.model.max_steps);
        self.model.generate_episode(
            episode_seed,
            &mut self.input_rates[i * n * s..(i + 1) * n * s],
        )?;
        self.episode_seeds[i] = episode_seed;
        self.steps[i] = 0;
        self.dones[i] = false;
        self.write_first_observation(i);
        Ok(())
    }

    /// A copy of everything that changes while the batch runs.
    #[must_use]
    pub fn state(&self) -> BatchEnvState {
        BatchEnvState {
            input_rates: self.input_rates.clone(),
            steps: self.steps.clone(),
            masters: self.masters.clone(),
            episode_seeds: self.episode_seeds.clone(),
            evaluation_seeds: self.evaluation_seeds.clone(),
            evaluation_cursor: self.evaluation_cursor.clone(),
            obs: self.obs.clone(),
            rewards: self.rewards.clone(),
            dones: self.dones.clone(),
            started: self.started,
        }
    }

    /// Restores a state taken by [`BatchEnv::state`] from a batch of the same
    /// model and size; the batch then continues exactly as the original.
    ///
    /// # Errors
    /// [`StepError::StateShape`] naming the first field that does not fit
    /// (nothing changes then).
    pub fn restore(&mut self, state: BatchEnvState) -> Result<(), StepError> {
        let checks: [(&'static str, usize, usize); 9] = [
            (
                "input_rates",
                state.input_rates.len(),
                self.input_rates.len(),
            ),
            ("steps", state.steps.len(), self.steps.len()),
            ("masters", state.masters.len(), self.masters.len()),
            (
                "episode_seeds",
                state.episode_seeds.len(),
                self.episode_seeds.len(),
            ),
            (
                "evaluation_cursor",
                state.evaluation_cursor.len(),
                self.evaluation_cursor.len(),
            ),
            ("obs", state.obs.len(), self.obs.len()),
            ("rewards", state.rewards.len(), self.rewards.len()),
            ("dones", state.dones.len(), self.dones.len()),
            (
                "steps (values)",
                state
                    .steps
                    .iter()
                    .filter(|&&s| s > self.model.max_steps)
                    .count(),
                0,
            ),
        ];
        if let Some(&(field, got, expected)) =
            checks.iter().find(|(_, got, expected)| got != expected)
        {
            return Err(StepError::StateShape {
                field,
                expected,
                got,
            });
        }
        self.input_rates = state.input_rates;
        self.steps = state.steps;
        self.masters = state.masters;
        self.episode_seeds = state.episode_seeds;
        self.evaluation_seeds = state.evaluation_seeds;
        self.evaluation_cursor = state.evaluation_cursor;
        self.obs = state.obs;
        self.rewards = state.rewards;
        self.dones = state.dones;
        self.started = state.started;
        Ok(())
    }

    /// Observations `[env][agent][obs_width]`.
    #[must_use]
    pub fn observations(&self) -> &[f32] {
        &self.obs
    }

    /// Rewards of the last step `[env][agent]`.
    #[must_use]
    pub fn rewards(&self) -> &[f32] {
        &self.rewards
    }

    /// Whether each env's episode ended at the last step.
    #[must_use]
    pub fn dones(&self) -> &[bool] {
        &self.dones
    }

    /// Current step of env `i` within its episode.
    #[must_use]
    pub fn step_index(&self, i: usize) -> usize {
        self.steps[i]
    }

    /// Episode seed of env `i`'s current episode.
    #[must_use]
    pub fn episode_seed(&self, i: usize) -> u32 {
        self.episode_seeds[i]
    }

    /// Input rates of env `i`'s current episode, `[agent][step]`.
    #[must_use]
    pub fn input_rates(&self, i: usize) -> &[u32] {
        let len = self.model.num_agents * self.model.max_steps;
        &self.input_rates[i * len..(i + 1) * len]
    }

    /// Steps every env with `actions` (`[env][agent][action_width]`).
    ///
    /// # Errors
    /// [`StepError`] for a wrong length, a non-finite entry, or a step
    /// before the first reset; nothing changes then.
    /// [`StepError::AutoReset`] when an env's next episode cannot start
    /// (only `real` traces can fail); every env has stepped then, and that
    /// env stays finished until the next [`BatchEnv::reset`].
    pub fn step(&mut self, actions: &[f32]) -> Result<(), StepError> {
        self.check(actions, 0..self.num_envs)?;
        let stride = self.model.num_agents * self.model.action_width;
        let mut first_failure = None;
        for (i, env_actions) in actions.chunks_exact(stride).enumerate() {
            if let Err(error) = self.step_env(i, env_actions, None) {
                first_failure.get_or_insert(StepError::AutoReset { env: i, error });
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// As [`BatchEnv::step`], also writing every per-step metric of env `i`
    /// into `metrics[i]` (`metrics.len() == num_envs`, each made with
    /// [`StepMetrics::new`]).
    ///
    /// # Errors
    /// As [`BatchEnv::step`]; also when `metrics` has the wrong length.
    pub fn step_with_metrics(
        &mut self,
        actions: &[f32],
        metrics: &mut [StepMetrics],
    ) -> Result<(), StepError> {
        if metrics.len() != self.num_envs {
            return Err(StepError::MetricsLength {
                expected: self.num_envs,
                got: metrics.len(),
            });
        }
        self.check(actions, 0..self.num_envs)?;
        let stride = self.model.num_agents * self.model.action_width;
        let mut first_failure = None;
        for (i, (env_actions, m)) in actions.chunks_exact(stride).zip(metrics).enumerate() {
            if let Err(error) = self.step_env(i, env_actions, Some(m)) {
                first_failure.get_or_insert(StepError::AutoReset { env: i, error });
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    pub(crate) fn check(
        &self,
        actions: &[f32],
        envs: core::ops::Range<usize>,
    ) -> Result<(), StepError> {
        let (n, w) = (self.model.num_agents, self.model.action_width);
        let expected = envs.len() * n * w;
        if actions.len() != expected {
            return Err(StepError::ActionLength {
                expected,
                got: actions.len(),
            });
        }
        if !self.started {
            return Err(StepError::NeedsReset);
        }
        for (local, i) in envs.enumerate() {
            if self.steps[i] >= self.model.max_steps {
                return Err(StepError::NeedsReset);
            }
            for a in 0..n {
                let row = &actions[(local * n + a) * w..][..self.model.degrees[a] + 2];
                if let Some((index, &value)) = row.iter().enumerate().find(|(_, p)| !p.is_finite())
                {
                    return Err(StepError::NonFiniteAction {
                        env: i,
                        agent: self.model.built.topology().names()[a].clone(),
                        index,
                        value,
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn mark_started(&mut self) {
        self.started = true;
    }

    /// One step of env `i` with its actions `[agent][action_width]`
    /// (already checked).
    ///
    /// # Errors
    /// The [`ResetError`] of a failed auto-reset (the step itself happened).
    pub(crate) fn step_env(
        &mut self,
        i: usize,
        env_actions: &[f32],
        mut metrics: Option<&mut StepMetrics>,
    ) -> Result<(), ResetError> {
        let model = &self.model;
        let (n, w, s) = (model.num_agents, model.action_width, model.max_steps);
        let t = self.steps[i];
        let inputs = &self.input_rates[i * n * s..(i + 1) * n * s];
        let sc = &mut self.scratch;
        if let Some(m) = metrics.as_deref_mut() {
            m.observation
                .copy_from_slice(&self.obs[i * n * model.obs_width..(i + 1) * n * model.obs_width]);
        }

        // 1. Split each agent's input by its action.
        for a in 0..n {
            let k = model.degrees[a];
            let rate = inputs[a * s + t];
            split_finite(
                &env_actions[a * w..a * w + k + 2],
                rate,
                &mut sc.counts[a * w..a * w + k + 2],
                &mut sc.fractions[..k + 2],
            );
        }
        sc.rejects.fill(0);

        // 2–4. Incoming list per node, model look-up, reject distribution.
        for node in 0..n {
            sc.list[0] = sc.counts[node * w];
            let mut len = 1;
            for e in model.in_offsets[node]..model.in_offsets[node + 1] {
                let slot = model.in_senders[e] * w + model.in_action_index[e];
                let c = sc.counts[slot];
                if c > 0 {
                    sc.list[len] = c;
                    sc.list_source[len] = slot;
                    len += 1;
                }
            }
            let total: u32 = sc.list[..len].iter().sum();
            let table = &model.tables[model.table_of[node]];
            let rejects = table.rejects()[total as usize];
            if rejects > 0 {
                distribute_rejects(
                    model.reject_arithmetic,
                    &sc.list[..len],
                    total,
                    rejects,
                    &mut sc.list_rejects[..len],
                );
                sc.rejects[node * w] = sc.list_rejects[0];
                for e in 1..len {
                    sc.rejects[sc.list_source[e]] = sc.list_rejects[e];
                }
            }
        }

        // 5. Reward: (local − local rejects + forwards − forward rejects − rejects) / input.
        for a in 0..n {
            let k = model.degrees[a];
            let numerator = reward_numerator(
                &sc.counts[a * w..a * w + k + 2],
                &sc.rejects[a * w..a * w + k + 1],
            );
            let rate = inputs[a * s + t];
            self.rewards[i * n + a] = if rate == 0 {
                0.0
            } else {
                numerator as f32 / rate as f32
            };
        }
        if let Some(m) = metrics {
            let rates: Vec<u32> = (0..n).map(|a| inputs[a * s + t]).collect();
            m.record(model, t, &rates, &sc.counts, &sc.rejects);
        }

        // 6. Advance; next observation (or the next episode's first).
        let next = t + 1;
        self.steps[i] = next;
        self.dones[i] = next == s;
        if next == s && self.auto_reset {
            let reset = self.reset_env(i, None, None);
            self.dones[i] = true;
            if reset.is_err() {
                // The env stays finished, with its terminal observation.
                self.steps[i] = s;
                self.write_observation(i, s - 1, s - 1);
            }
            return reset;
        }
        self.write_observation(i, next.min(s - 1), next - 1);
        Ok(())
    }

    /// Observation at step 0: `prev_input_rate` 1, per-neighbour entries 0.
    fn write_first_observation(&mut self, i: usize) {
        let (n, s, ow) = (
            self.model.num_agents,
            self.model.max_steps,
            self.model.obs_width,
        );
        for a in 0..n {
            let row = &mut self.obs[(i * n + a) * ow..(i * n + a + 1) * ow];
            row.fill(0.0);
            row[0] = self.input_rates[(i * n + a) * s] as f32;
            row[1] = 1.0;
        }
    }

    /// Observation for step `t` after step `prev` (with the scratch of
    /// `prev`): input at `t`, input at `prev`, forwards and forward rejects
    /// of `prev`. After the last step `t == prev`: the terminal
    /// observation repeats the last input rate.
    fn write_observation(&mut self, i: usize, t: usize, prev: usize) {
        let (n, s, w, ow) = (
            self.model.num_agents,
            self.model.max_steps,
            self.model.action_width,
            self.model.obs_width,
        );
        for a in 0..n {
            let k = self.model.degrees[a];
            let row = &mut self.obs[(i * n + a) * ow..(i * n + a + 1) * ow];
            let trace = &self.input_rates[(i * n + a) * s..(i * n + a + 1) * s];
            row[0] = trace[t] as f32;
            row[1] = trace[prev] as f32;
            for j in 1..=k {
                row[1 + j] = self.scratch.counts[a * w + j] as f32;
                row[1 + k + j] = self.scratch.rejects[a * w + j] as f32;
            }
        }
    }
}
