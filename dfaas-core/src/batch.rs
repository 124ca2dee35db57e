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
//!
//! A step writes the next observations into a spare buffer and swaps it
//! in; with metrics, the observations stepped from go to the
//! [`BatchMetrics`] by a swap as well (no copy).
//!
//! With the `parallel` feature a step runs consecutive envs in runs (of at
//! least `MIN_RUN` agent-steps, a few per thread; with metrics, of whole
//! windows of envs, each recording into its part of the rows) on the
//! threads of the current rayon pool — choose their number with
//! `rayon::ThreadPoolBuilder::num_threads(..).build()?.install(|| …)` or
//! `RAYON_NUM_THREADS` — each with its own scratch. Every env's step is
//! computed alone, so the results, the metrics and the error reported (the
//! first failed auto-reset in env order) are the same for any number of
//! threads.

use crate::alloc_prelude::*;
use crate::batch_metrics::{BatchMetrics, LaneMetricsScratch, MetricsWriter, WINDOW};
use crate::error::{ResetError, StepError};
use crate::lanes::{self, LANES, LaneStep};
use crate::metrics::StepMetrics;
use crate::model::EnvModel;
use crate::resolve::StepResolver;
use crate::reward;
use crate::rng::{Xoshiro128PlusPlus, draw_episode_seed, env_master_seed, seeded};
use crate::split::split_finite;

/// Reusable per-step buffers (one env at a time).
#[derive(Debug, Clone)]
struct Scratch {
    /// Split counts `[agent][action_width]`.
    counts: Vec<u32>,
    /// Fractional parts of one agent's split.
    fractions: Vec<f32>,
    /// Steps 2–5 of a step, and its rejects `[agent][action_width]`.
    resolver: StepResolver,
    /// The step's input rates `[agent]` (for the metrics).
    rates: Vec<u32>,
    /// The lane step of `LANES` envs, and their input rates `[agent][lane]`
    /// (empty when the lane step does not apply to the model).
    lanes: Option<LaneStep>,
    lane_rates: Vec<wide::i32x8>,
    /// The lane step's next observations `[agent][obs_width]` (padding 0).
    lane_obs: Vec<wide::f32x8>,
    /// The lane step's metrics.
    lane_metrics: LaneMetricsScratch,
    /// One env's metrics from the per-env step.
    record: StepMetrics,
}

impl Scratch {
    fn new(model: &EnvModel) -> Self {
        Self {
            counts: vec![0; model.num_agents * model.action_width],
            fractions: vec![0.0; model.action_width],
            resolver: StepResolver::new(model),
            rates: vec![0; model.num_agents],
            lanes: lanes::applies(model).then(|| LaneStep::new(model)),
            lane_rates: vec![wide::i32x8::ZERO; model.num_agents],
            lane_obs: vec![wide::f32x8::ZERO; model.num_agents * model.obs_width],
            lane_metrics: LaneMetricsScratch::new(model),
            record: StepMetrics::default(),
        }
    }
}

/// Everything that changes while a [`BatchEnv`] runs, to save and restore
/// it exactly (checkpoints): random streams, episodes, steps, outputs.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
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

/// Fewest agent-steps of a run of envs stepped on a thread of its own
/// (`parallel`).
#[cfg(feature = "parallel")]
pub const MIN_RUN: usize = 1024;

/// Whether every value is finite (neither NaN nor ±∞): one pass that
/// vectorises, for the common case. A value is not finite when its
/// exponent bits are all ones; adding one to the exponent then carries
/// into the sign bit.
fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    let carries = values.iter().fold(0u32, |acc, v| {
        acc | (v.to_bits() & EXPONENT).wrapping_add(0x0080_0000)
    });
    carries & 0x8000_0000 == 0
}

/// Index and value of the first of `values` above `max`.
fn first_above(values: impl Iterator<Item = u64>, max: u64) -> Option<(usize, u64)> {
    values.enumerate().find(|&(_, v)| v > max)
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
    /// Where a batch step writes the next observations (then swapped with
    /// `obs`, so that the ones stepped from stay, uncopied, for the
    /// metrics).
    next_obs: Vec<f32>,
    /// Terminal observations of the envs whose episode ended at the last
    /// step, `[env][agent][obs_width]` (auto-reset only).
    final_obs: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<bool>,
    started: bool,
    scratch: Scratch,
    /// One scratch per run of envs stepped in parallel.
    #[cfg(feature = "parallel")]
    extra_scratch: Vec<Scratch>,
}

impl BatchEnv {
    /// `num_envs` environments of `model`, with auto-reset. Call
    /// [`BatchEnv::reset`] before the first step.
    ///
    /// # Errors
    /// [`StepError::TooManyEnvs`] when the batch's arrays would not fit in
    /// memory's address range.
    pub fn new(model: EnvModel, num_envs: usize) -> Result<Self, StepError> {
        // The largest arrays: input rates `[env][agent][step]` (u32) and
        // observations `[env][agent][obs_width]` (f32), in bytes.
        let widest = model.max_steps.max(model.obs_width);
        let fits = num_envs
            .checked_mul(model.num_agents)
            .and_then(|v| v.checked_mul(widest))
            .and_then(|v| v.checked_mul(4))
            .is_some_and(|bytes| bytes <= isize::MAX as usize);
        if !fits {
            return Err(StepError::TooManyEnvs { num_envs });
        }
        Ok(Self::with_auto_reset(model, num_envs, true))
    }

    /// A batch whose sizes are known to fit (one env, or checked by `new`).
    pub(crate) fn with_auto_reset(model: EnvModel, num_envs: usize, auto_reset: bool) -> Self {
        let n = model.num_agents();
        Self {
            input_rates: vec![0; num_envs * n * model.max_steps()],
            steps: vec![model.max_steps(); num_envs],
            masters: vec![seeded(0); num_envs],
            episode_seeds: vec![0; num_envs],
            evaluation_seeds: Vec::new(),
            evaluation_cursor: (0..num_envs).collect(),
            obs: vec![0.0; num_envs * n * model.obs_width()],
            next_obs: vec![0.0; num_envs * n * model.obs_width()],
            final_obs: if auto_reset {
                vec![0.0; num_envs * n * model.obs_width()]
            } else {
                Vec::new()
            },
            rewards: vec![0.0; num_envs * n],
            dones: vec![false; num_envs],
            started: false,
            scratch: Scratch::new(&model),
            #[cfg(feature = "parallel")]
            extra_scratch: Vec::new(),
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
        let (mut envs, _) = self.view();
        envs.reset(i, master_seed, episode_seed)
    }

    /// The per-env arrays of every env, observations changed in place, and
    /// the scratch.
    fn view(&mut self) -> (Envs<'_>, &mut Scratch) {
        self.envs(false)
    }

    /// [`Self::view`], or with the next observations written to `next_obs`
    /// (`spare`) while the current ones are read.
    fn envs(&mut self, spare: bool) -> (Envs<'_>, &mut Scratch) {
        let (obs, stepped_from) = if spare {
            (&mut self.next_obs, Some(&self.obs[..]))
        } else {
            (&mut self.obs, None)
        };
        (
            Envs {
                model: &self.model,
                evaluation_seeds: &self.evaluation_seeds,
                auto_reset: self.auto_reset,
                first: 0,
                input_rates: &mut self.input_rates,
                steps: &mut self.steps,
                masters: &mut self.masters,
                episode_seeds: &mut self.episode_seeds,
                evaluation_cursor: &mut self.evaluation_cursor,
                obs,
                stepped_from,
                final_obs: &mut self.final_obs,
                rewards: &mut self.rewards,
                dones: &mut self.dones,
            },
            &mut self.scratch,
        )
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
    /// [`StepError::StateShape`] naming the first field whose size does not
    /// fit, [`StepError::StateValue`] the first value this batch cannot
    /// continue from (nothing changes then).
    pub fn restore(&mut self, state: BatchEnvState) -> Result<(), StepError> {
        let checks: [(&'static str, usize, usize); 8] = [
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
        let max_cursor = state.evaluation_seeds.len().saturating_sub(1);
        // (field, its first entry above the limit, the limit)
        #[allow(clippy::type_complexity)]
        let values: [(&'static str, Option<(usize, u64)>, u64); 3] = [
            (
                "steps",
                first_above(
                    state.steps.iter().map(|&s| s as u64),
                    self.model.max_steps as u64,
                ),
                self.model.max_steps as u64,
            ),
            (
                "input_rates",
                first_above(
                    state.input_rates.iter().map(|&r| u64::from(r)),
                    u64::from(self.model.max_rate),
                ),
                u64::from(self.model.max_rate),
            ),
            (
                "evaluation_cursor",
                first_above(
                    state.evaluation_cursor.iter().map(|&c| c as u64),
                    max_cursor as u64,
                )
                .filter(|_| !state.evaluation_seeds.is_empty()),
                max_cursor as u64,
            ),
        ];
        if let Some(&(field, Some((index, value)), max)) =
            values.iter().find(|(_, first, _)| first.is_some())
        {
            return Err(StepError::StateValue {
                field,
                index,
                value,
                max,
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

    /// The terminal observations `[env][agent][obs_width]` of the envs
    /// whose episode ended at the last step (`dones()[i]`; their
    /// [`BatchEnv::observations`] already hold the next episode's first):
    /// the last input rate as both `input_rate` and `prev_input_rate`, the
    /// last step's forwards and forward rejects — what [`crate::Env`]
    /// returns after its last step. Rows of other envs hold the terminal
    /// observation of their previous episode, or zeros.
    #[must_use]
    pub fn final_observations(&self) -> &[f32] {
        &self.final_obs
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
        self.step_all(actions, None)
    }

    /// As [`BatchEnv::step`], also writing every per-step metric of every
    /// env into `metrics` (resized to the batch when it has another shape,
    /// e.g. `BatchMetrics::default()`).
    ///
    /// # Errors
    /// As [`BatchEnv::step`]; `metrics` is unchanged then.
    pub fn step_with_metrics(
        &mut self,
        actions: &[f32],
        metrics: &mut BatchMetrics,
    ) -> Result<(), StepError> {
        self.check(actions, 0..self.num_envs)?;
        metrics.resize(&self.model, self.num_envs);
        self.step_all(actions, Some(metrics))
    }

    /// Steps every env (actions checked) into the spare observations, then
    /// swaps them in; the observations stepped from become the metrics'
    /// (whose previous ones become the spare). The first failed auto-reset
    /// in env order, if any.
    fn step_all(
        &mut self,
        actions: &[f32],
        mut metrics: Option<&mut BatchMetrics>,
    ) -> Result<(), StepError> {
        let result = self.step_envs(actions, metrics.as_deref_mut());
        core::mem::swap(&mut self.obs, &mut self.next_obs);
        if let Some(metrics) = metrics {
            metrics.swap_observations(&mut self.next_obs);
        }
        result
    }

    /// Steps every env (see [`Self::step_all`]).
    #[cfg(not(feature = "parallel"))]
    fn step_envs(
        &mut self,
        actions: &[f32],
        metrics: Option<&mut BatchMetrics>,
    ) -> Result<(), StepError> {
        let mut writer = metrics.map(BatchMetrics::writer);
        let (mut envs, scratch) = self.envs(true);
        envs.step_run(actions, writer.as_mut(), scratch)
            .map_or(Ok(()), Err)
    }

    /// Steps every env (see [`Self::step_all`]) in runs of consecutive
    /// envs on the current rayon pool's threads, each run with its own
    /// scratch. Every env's step is computed alone, so the results are the
    /// same for any number of threads or runs.
    #[cfg(feature = "parallel")]
    fn step_envs(
        &mut self,
        actions: &[f32],
        metrics: Option<&mut BatchMetrics>,
    ) -> Result<(), StepError> {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads();
        // A few runs per thread, so that uneven runs (auto-resets) balance,
        // each of at least MIN_RUN agent-steps (below, a thread's start
        // costs more than it saves) and a whole number of lane blocks —
        // with metrics, of windows, each run recording into its part of
        // every row.
        let per_run = self
            .num_envs
            .div_ceil(4 * threads)
            .max(MIN_RUN.div_ceil(self.model.num_agents))
            .next_multiple_of(if metrics.is_some() { WINDOW } else { LANES });
        let runs = self.num_envs.div_ceil(per_run);
        if threads == 1 || runs == 1 {
            let mut writer = metrics.map(BatchMetrics::writer);
            let (mut envs, scratch) = self.envs(true);
            return envs
                .step_run(actions, writer.as_mut(), scratch)
                .map_or(Ok(()), Err);
        }
        while self.extra_scratch.len() < runs {
            self.extra_scratch.push(Scratch::new(&self.model));
        }
        let stride = self.model.num_agents * self.model.action_width;
        let mut extra = core::mem::take(&mut self.extra_scratch);
        let (envs, _) = self.envs(true);
        let mut views = Vec::with_capacity(runs);
        let mut rest = envs;
        while rest.len() > per_run {
            let (run, tail) = rest.split_at(per_run);
            views.push(run);
            rest = tail;
        }
        views.push(rest);
        let mut writers: Vec<Option<MetricsWriter<'_>>> = match metrics {
            Some(metrics) => metrics.run_writers(per_run).into_iter().map(Some).collect(),
            None => (0..runs).map(|_| None).collect(),
        };
        let failure = views
            .into_par_iter()
            .zip(actions.par_chunks(per_run * stride))
            .zip(extra.par_iter_mut())
            .zip(writers.par_iter_mut())
            .filter_map(|(((mut run, actions), scratch), writer)| {
                run.step_run(actions, writer.as_mut(), scratch)
            })
            .min_by_key(|e| match e {
                StepError::AutoReset { env, .. } => *env,
                _ => usize::MAX,
            });
        drop(writers);
        self.extra_scratch = extra;
        failure.map_or(Ok(()), Err)
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
        // The common case in two passes that vectorise; otherwise find the
        // first env that cannot step (a non-finite entry may also sit in
        // the padding, which does not count).
        let max_steps = self.model.max_steps;
        if self.steps[envs.clone()].iter().all(|&t| t < max_steps) && all_finite(actions) {
            return Ok(());
        }
        for (local, i) in envs.enumerate() {
            if self.steps[i] >= max_steps {
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
        metrics: Option<&mut StepMetrics>,
    ) -> Result<(), ResetError> {
        let (mut envs, scratch) = self.view();
        envs.step(i, env_actions, metrics, scratch)
    }
}

/// The per-env arrays of the consecutive envs `first..first + len()` of a
/// batch (a run of them, or all), with what they read from the batch.
struct Envs<'a> {
    model: &'a EnvModel,
    evaluation_seeds: &'a [u32],
    auto_reset: bool,
    /// Batch index of the run's env 0.
    first: usize,
    input_rates: &'a mut [u32],
    steps: &'a mut [usize],
    masters: &'a mut [Xoshiro128PlusPlus],
    episode_seeds: &'a mut [u32],
    evaluation_cursor: &'a mut [usize],
    /// Where observations are written.
    obs: &'a mut [f32],
    /// The observations the step starts from when they are not `obs`
    /// (a batch step writes the next ones elsewhere).
    stepped_from: Option<&'a [f32]>,
    /// Empty without auto-reset.
    final_obs: &'a mut [f32],
    rewards: &'a mut [f32],
    dones: &'a mut [bool],
}

impl<'a> Envs<'a> {
    /// Envs in the run.
    #[cfg(feature = "parallel")]
    fn len(&self) -> usize {
        self.steps.len()
    }

    /// The first `k` envs and the rest.
    #[cfg(feature = "parallel")]
    fn split_at(self, k: usize) -> (Envs<'a>, Envs<'a>) {
        let m = self.model;
        let (n, s, ow) = (m.num_agents, m.max_steps, m.obs_width);
        let (rates_a, rates_b) = self.input_rates.split_at_mut(k * n * s);
        let (steps_a, steps_b) = self.steps.split_at_mut(k);
        let (masters_a, masters_b) = self.masters.split_at_mut(k);
        let (seeds_a, seeds_b) = self.episode_seeds.split_at_mut(k);
        let (cursor_a, cursor_b) = self.evaluation_cursor.split_at_mut(k);
        let (obs_a, obs_b) = self.obs.split_at_mut(k * n * ow);
        let (from_a, from_b) = match self.stepped_from {
            Some(from) => {
                let (a, b) = from.split_at(k * n * ow);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let cut = if self.final_obs.is_empty() {
            0
        } else {
            k * n * ow
        };
        let (final_a, final_b) = self.final_obs.split_at_mut(cut);
        let (rewards_a, rewards_b) = self.rewards.split_at_mut(k * n);
        let (dones_a, dones_b) = self.dones.split_at_mut(k);
        let head = |first| (m, self.evaluation_seeds, self.auto_reset, first);
        let (model, evaluation_seeds, auto_reset, first) = head(self.first);
        (
            Envs {
                model,
                evaluation_seeds,
                auto_reset,
                first,
                input_rates: rates_a,
                steps: steps_a,
                masters: masters_a,
                episode_seeds: seeds_a,
                evaluation_cursor: cursor_a,
                obs: obs_a,
                stepped_from: from_a,
                final_obs: final_a,
                rewards: rewards_a,
                dones: dones_a,
            },
            Envs {
                model,
                evaluation_seeds,
                auto_reset,
                first: first + k,
                input_rates: rates_b,
                steps: steps_b,
                masters: masters_b,
                episode_seeds: seeds_b,
                evaluation_cursor: cursor_b,
                obs: obs_b,
                stepped_from: from_b,
                final_obs: final_b,
                rewards: rewards_b,
                dones: dones_b,
            },
        )
    }

    /// Steps every env of the run with its actions `[env][agent][action_width]`
    /// (metrics into the run's part of a batch's metrics when given); the
    /// run's first failed auto-reset, named by its batch index.
    fn step_run(
        &mut self,
        actions: &[f32],
        mut metrics: Option<&mut MetricsWriter<'_>>,
        scratch: &mut Scratch,
    ) -> Option<StepError> {
        let stride = self.model.num_agents * self.model.action_width;
        let envs = actions.len() / stride;
        let lanes = scratch.lanes.is_some();
        // Lane blocks stepped whose metrics are yet to be derived.
        let mut underived = 0..0;
        let mut first_failure = None;
        let mut i = 0;
        while i < envs {
            // A whole lane block of `LANES` envs at once when none of them
            // ends its episode.
            if lanes
                && i % LANES == 0
                && i + LANES <= envs
                && self.steps[i..i + LANES]
                    .iter()
                    .all(|&t| t + 1 < self.model.max_steps)
            {
                let m = metrics.as_deref_mut();
                self.step_lanes(i, &actions[i * stride..(i + LANES) * stride], m, scratch);
                if let Some(run) = metrics.as_deref_mut() {
                    // Derived a window at a time, once its blocks are in
                    // (envs stepped one by one between them are derived
                    // again alike).
                    if underived.start / WINDOW != i / WINDOW {
                        run.finish_window(self.model, underived, &mut scratch.lane_metrics);
                        underived = i..i;
                    }
                    if underived.is_empty() {
                        underived.start = i;
                    }
                    underived.end = i + LANES;
                }
                i += LANES;
                continue;
            }
            // The per-env step records into the scratch record, copied into
            // the run's part of the rows.
            let mut record = metrics
                .is_some()
                .then(|| core::mem::take(&mut scratch.record));
            let env_actions = &actions[i * stride..(i + 1) * stride];
            if let Err(error) = self.step(i, env_actions, record.as_mut(), scratch) {
                first_failure.get_or_insert(StepError::AutoReset {
                    env: self.first + i,
                    error,
                });
            }
            if let (Some(run), Some(record)) = (metrics.as_deref_mut(), record) {
                run.set_env(i, &record);
                scratch.record = record;
            }
            i += 1;
        }
        if let Some(run) = metrics {
            run.finish_window(self.model, underived, &mut scratch.lane_metrics);
        }
        first_failure
    }

    /// One step of the `LANES` envs `first..first + LANES` of the run, none
    /// of which ends its episode, by the lane step (metrics into the run's
    /// part of a batch's metrics when given): the same as [`Envs::step`] on
    /// each.
    fn step_lanes(
        &mut self,
        first: usize,
        actions: &[f32],
        metrics: Option<&mut MetricsWriter<'_>>,
        sc: &mut Scratch,
    ) {
        let model = self.model;
        let (n, s, w, ow) = (
            model.num_agents,
            model.max_steps,
            model.action_width,
            model.obs_width,
        );
        let Some(step) = sc.lanes.as_mut() else {
            return;
        };
        // Where each env's traces are at this step; this step's and the
        // next step's input rates as lanes (at most MAX_INPUT_RATE < 2³¹).
        for (a, rates) in sc.lane_rates.iter_mut().enumerate() {
            let (mut now, mut next) = ([0i32; LANES], [0f32; LANES]);
            for (l, &t) in self.steps[first..first + LANES].iter().enumerate() {
                let at = ((first + l) * n + a) * s + t;
                now[l] = self.input_rates[at] as i32;
                next[l] = self.input_rates[at + 1] as i32 as f32;
            }
            *rates = wide::i32x8::new(now);
            sc.lane_obs[a * ow] = wide::f32x8::new(next);
        }
        step.step(model, actions, &sc.lane_rates);
        if let Some(run) = metrics {
            run.store_lanes(
                first,
                &self.steps[first..first + LANES],
                &sc.lane_rates,
                step,
            );
        }
        // The next observations as lanes (the next rates are in; padding
        // stays 0, as in every row), then back to `[env][agent]` rows.
        for (a, &k) in model.degrees.iter().enumerate() {
            let row = &mut sc.lane_obs[a * ow..a * ow + 2 + 2 * k];
            row[1] = sc.lane_rates[a].round_float();
            let (forwards, forward_rejects) = row[2..].split_at_mut(k);
            let counts = &step.counts[a * w + 1..a * w + 1 + k];
            let rejects = &step.rejects[a * w + 1..a * w + 1 + k];
            for (o, c) in forwards.iter_mut().zip(counts) {
                *o = c.round_float();
            }
            for (o, r) in forward_rejects.iter_mut().zip(rejects) {
                *o = r.round_float();
            }
        }
        let env_obs = n * ow;
        lanes::scatter_lanes(
            &sc.lane_obs,
            &mut self.obs[first * env_obs..(first + LANES) * env_obs],
            env_obs,
        );
        lanes::scatter_lanes(
            &step.rewards,
            &mut self.rewards[first * n..(first + LANES) * n],
            n,
        );
        for (t, done) in self.steps[first..first + LANES]
            .iter_mut()
            .zip(&mut self.dones[first..first + LANES])
        {
            *t += 1;
            *done = false;
        }
    }

    /// Resets env `i` of the run (see [`BatchEnv::reset_env`]).
    fn reset(
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
        let (n, s) = (self.model.num_agents, self.model.max_steps);
        self.model
            .generate_episode(seed, &mut self.input_rates[i * n * s..(i + 1) * n * s])?;
        self.episode_seeds[i] = seed;
        self.steps[i] = 0;
        self.dones[i] = false;
        self.write_first_observation(i);
        Ok(())
    }

    /// One step of env `i` of the run (see [`BatchEnv::step_env`]).
    fn step(
        &mut self,
        i: usize,
        env_actions: &[f32],
        metrics: Option<&mut StepMetrics>,
        sc: &mut Scratch,
    ) -> Result<(), ResetError> {
        let model = self.model;
        let (n, w, s) = (model.num_agents, model.action_width, model.max_steps);
        let t = self.steps[i];
        let inputs = &self.input_rates[i * n * s..(i + 1) * n * s];

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
        // 2–5. Incoming lists, model look-up, reject distribution, rewards.
        let rewards = &mut self.rewards[i * n..(i + 1) * n];
        sc.resolver.resolve_unchecked(
            model,
            |a| inputs[a * s + t],
            &sc.counts,
            |a, numerator, total| rewards[a] = reward::ratio(numerator, total),
        );
        if let Some(m) = metrics {
            for (a, rate) in sc.rates.iter_mut().enumerate() {
                *rate = inputs[a * s + t];
            }
            let env_obs = i * n * model.obs_width..(i + 1) * n * model.obs_width;
            let observation = match self.stepped_from {
                Some(from) => &from[env_obs],
                None => &self.obs[env_obs],
            };
            m.record_unchecked(
                model,
                t,
                observation,
                &sc.rates,
                &sc.counts,
                sc.resolver.rejects(),
            );
        }

        // 6. Advance; next observation (or the next episode's first).
        let next = t + 1;
        self.steps[i] = next;
        self.dones[i] = next == s;
        if next == s && self.auto_reset {
            // Keep the terminal observation before the next episode's first.
            self.write_observation(i, s - 1, s - 1, sc);
            let ow = model.obs_width;
            let rows = i * n * ow..(i + 1) * n * ow;
            self.final_obs[rows.clone()].copy_from_slice(&self.obs[rows]);
            let reset = self.reset(i, None, None);
            self.dones[i] = true;
            if reset.is_err() {
                // The env stays finished, with its terminal observation.
                self.steps[i] = s;
                self.write_observation(i, s - 1, s - 1, sc);
            }
            return reset;
        }
        self.write_observation(i, next.min(s - 1), next - 1, sc);
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
    fn write_observation(&mut self, i: usize, t: usize, prev: usize, sc: &Scratch) {
        let model = self.model;
        let (n, s, w, ow) = (
            model.num_agents,
            model.max_steps,
            model.action_width,
            model.obs_width,
        );
        let obs = &mut self.obs[i * n * ow..(i + 1) * n * ow];
        let traces = &self.input_rates[i * n * s..(i + 1) * n * s];
        let rejects = sc.resolver.rejects();
        for (a, &k) in model.degrees.iter().enumerate() {
            // The whole row: a batch step writes into the spare buffer.
            let (row, padding) = obs[a * ow..(a + 1) * ow].split_at_mut(2 + 2 * k);
            padding.fill(0.0);
            let (rates, row) = row.split_at_mut(2);
            rates[0] = traces[a * s + t] as f32;
            rates[1] = traces[a * s + prev] as f32;
            let (forwards, forward_rejects) = row.split_at_mut(k);
            let counts = &sc.counts[a * w + 1..a * w + 1 + k];
            let rejects = &rejects[a * w + 1..a * w + 1 + k];
            for j in 0..k {
                forwards[j] = counts[j] as f32;
                forward_rejects[j] = rejects[j] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvConfig;

    fn batch(num_envs: usize, evaluation: bool) -> BatchEnv {
        let config = EnvConfig {
            evaluation,
            ..EnvConfig::default()
        };
        let model = EnvModel::new(&config.build().unwrap()).unwrap();
        let mut batch = BatchEnv::new(model, num_envs).unwrap();
        if evaluation {
            batch.set_evaluation_seeds(3, 2);
        }
        batch.reset(11).unwrap();
        batch
    }

    fn thirds(batch: &BatchEnv) -> Vec<f32> {
        let m = batch.model();
        vec![1.0 / 3.0; batch.num_envs() * m.num_agents() * m.action_width()]
    }

    /// The observations a step hands to the metrics are its own, and the
    /// buffer it takes back (here filled with 99s through records) never
    /// shows: every observation equals a twin's stepped without metrics —
    /// lane blocks, a tail, and episode ends (per-env steps, auto-resets)
    /// on a model with padded observation rows.
    #[test]
    fn observations_handed_to_the_metrics_are_the_ones_stepped_from() {
        let network = [
            "node_0 node_1 node_2",
            "node_3 node_2 node_0",
            "node_1 node_4",
        ];
        let config = EnvConfig {
            max_steps: 6,
            ..EnvConfig::with_network(&network)
        };
        let model = EnvModel::new(&config.build().unwrap()).unwrap();
        let (n, ow) = (model.num_agents, model.obs_width);
        assert!(
            model.degrees.iter().any(|&k| 2 + 2 * k < ow),
            "rows with padding"
        );
        let envs = 19;
        let mut recorded = BatchEnv::new(model.clone(), envs).unwrap();
        let mut plain = BatchEnv::new(model.clone(), envs).unwrap();
        recorded.reset(5).unwrap();
        plain.reset(5).unwrap();
        let mut metrics = BatchMetrics::new(&model, envs);
        let mut junk = StepMetrics::new(&model);
        junk.observation.fill(99.0);
        let stride = n * model.action_width;
        let actions: Vec<f32> = (0..envs * stride).map(|i| (i % 7) as f32 / 6.0).collect();
        for step in 0..14 {
            for e in 0..envs {
                metrics.set_env(e, &junk).unwrap();
            }
            let before = plain.observations().to_vec();
            recorded.step_with_metrics(&actions, &mut metrics).unwrap();
            plain.step(&actions).unwrap();
            assert_eq!(metrics.observations(), &before[..], "step {step}");
            assert_eq!(recorded.state(), plain.state(), "step {step}");
            assert_eq!(recorded.final_observations(), plain.final_observations());
        }
    }

    #[test]
    fn restored_state_continues_exactly() {
        let mut a = batch(3, false);
        let actions = thirds(&a);
        for _ in 0..5 {
            a.step(&actions).unwrap();
        }
        let mut b = batch(3, false);
        b.restore(a.state()).unwrap();
        for _ in 0..300 {
            a.step(&actions).unwrap();
            b.step(&actions).unwrap();
        }
        assert_eq!(a.state(), b.state());
    }

    #[test]
    fn states_with_values_out_of_range_are_refused_and_change_nothing() {
        let mut b = batch(2, true);
        let before = b.state();
        let max_rate = b.model().max_input_rate();
        let mut state = before.clone();
        state.input_rates[7] = max_rate + 1;
        assert_eq!(
            b.restore(state),
            Err(StepError::StateValue {
                field: "input_rates",
                index: 7,
                value: u64::from(max_rate) + 1,
                max: u64::from(max_rate),
            })
        );
        let mut state = before.clone();
        state.evaluation_cursor[1] = 2; // two seeds: cursors 0 and 1
        assert!(matches!(
            b.restore(state),
            Err(StepError::StateValue {
                field: "evaluation_cursor",
                index: 1,
                value: 2,
                max: 1
            })
        ));
        let mut state = before.clone();
        state.steps[0] = b.model().max_steps() + 1;
        assert!(matches!(
            b.restore(state),
            Err(StepError::StateValue { field: "steps", .. })
        ));
        let mut state = before.clone();
        state.obs.pop();
        assert!(matches!(
            b.restore(state),
            Err(StepError::StateShape { field: "obs", .. })
        ));
        assert_eq!(b.state(), before);
        // The batch still steps (the refused states left no trace).
        let actions = thirds(&b);
        for _ in 0..b.model().max_steps() + 1 {
            b.step(&actions).unwrap();
        }
    }

    #[test]
    fn metrics_of_any_shape_are_resized_to_the_model() {
        let (mut a, mut b, mut c) = (batch(2, false), batch(2, false), batch(2, false));
        let actions = thirds(&a);
        let mut sized = BatchMetrics::new(a.model(), 2);
        // Default metrics, and metrics of one env of a 5-agent model.
        let other = EnvModel::new(
            &EnvConfig::with_network(&["a b c d e", "b c"])
                .build()
                .unwrap(),
        )
        .unwrap();
        let mut default = BatchMetrics::default();
        let mut odd = BatchMetrics::new(&other, 1);
        for _ in 0..3 {
            a.step_with_metrics(&actions, &mut sized).unwrap();
            b.step_with_metrics(&actions, &mut default).unwrap();
            c.step_with_metrics(&actions, &mut odd).unwrap();
            assert_eq!(sized, default);
            assert_eq!(sized, odd);
        }
        assert_eq!(
            sized.env(2),
            Err(StepError::EnvIndex {
                env: 2,
                num_envs: 2
            })
        );
    }

    #[test]
    fn batches_too_large_to_address_are_refused() {
        let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
        assert_eq!(
            BatchEnv::new(model, usize::MAX / 2).err(),
            Some(StepError::TooManyEnvs {
                num_envs: usize::MAX / 2
            })
        );
    }

    #[test]
    fn auto_reset_errors_chain_their_cause() {
        let e = StepError::AutoReset {
            env: 4,
            error: ResetError::RealTracesMissing,
        };
        let source = core::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source, Some(ResetError::RealTracesMissing.to_string()));
        assert!(!e.to_string().contains("day files"), "cause not repeated");
    }
}
