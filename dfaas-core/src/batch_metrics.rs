//! [`BatchMetrics`]: every per-step metric of every env of a batch, field
//! by field with the envs innermost (`[agent][env]`, `[agent][entry][env]`),
//! so that the lane step stores eight envs of a value at once and a sum
//! over envs reads one contiguous row; the observations env-major, as the
//! batch's. Env `e`'s values are the [`StepMetrics`] of its step
//! ([`BatchMetrics::env`]), bit for bit.
//!
//! The lane step stores only what it computed (rates, splits, rejects);
//! once a window of [`WINDOW`] envs has stepped,
//! [`MetricsWriter::finish_window`] derives every other field from those,
//! row by row and four envs at a time. The per-env step records each env
//! with [`StepMetrics::record`], which stays the definition.
//!
//! Units as in [`StepMetrics`]: counts in requests per step; response
//! times in the unit of the service times; network delays in ms.

use crate::alloc_prelude::*;
use crate::error::StepError;
use crate::lanes::{LANES, LaneStep, MAX_DEGREE};
use crate::metrics::StepMetrics;
use crate::model::EnvModel;
use core::ops::Range;
use wide::{f64x2, f64x4, i32x4, i32x8};

/// Count fields of one value per agent, in their order in the count rows.
const INCOMING_RATE: usize = 0;
const INCOMING_LOCAL: usize = 1;
const INCOMING_FORWARD: usize = 2;
const INCOMING_REJECT: usize = 3;
const INCOMING_LOCAL_REJECT: usize = 4;
const INCOMING_FORWARD_REJECT: usize = 5;
const FORWARD_REJECT_RATE: usize = 6;
const PER_AGENT_COUNTS: usize = 7;

/// Time fields of one value per agent, in their order in the time rows.
const REWARD: usize = 0;
const RESPONSE_LOCAL: usize = 1;
const RESPONSE_FORWARDED: usize = 2;
const FORWARD_DELAY: usize = 3;
const RETURN_DELAY: usize = 4;
const PER_AGENT_TIMES: usize = 5;

/// Time fields of one value per action entry, after those.
const RESPONSE_TO: usize = 0;
const FORWARD_DELAY_TO: usize = 1;
const RETURN_DELAY_TO: usize = 2;
const PER_ENTRY_TIMES: usize = 3;

/// Where each field's rows (one value per env) sit, for `n` agents, action
/// width `w` and observation width `ow`. Count rows: input rates
/// `[agent]`, actions `[agent][w]`, the [`PER_AGENT_COUNTS`] fields
/// `[agent]`, forward rejects `[agent][w]`. Time rows: the
/// [`PER_AGENT_TIMES`] fields `[agent]`, then the [`PER_ENTRY_TIMES`]
/// fields `[agent][w]`. Observations are not rows: `[env][agent][ow]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rows {
    n: usize,
    w: usize,
    ow: usize,
}

impl Rows {
    fn of(model: &EnvModel) -> Self {
        Self {
            n: model.num_agents,
            w: model.action_width,
            ow: model.obs_width,
        }
    }

    fn input(self, a: usize) -> usize {
        a
    }

    fn action(self, a: usize, j: usize) -> usize {
        self.n + a * self.w + j
    }

    fn per_agent_count(self, field: usize, a: usize) -> usize {
        self.n + self.n * self.w + field * self.n + a
    }

    fn forward_rejects(self, a: usize, j: usize) -> usize {
        self.per_agent_count(PER_AGENT_COUNTS, 0) + a * self.w + j
    }

    fn count_rows(self) -> usize {
        self.forward_rejects(self.n, 0)
    }

    fn per_agent_time(self, field: usize, a: usize) -> usize {
        field * self.n + a
    }

    fn per_entry_time(self, field: usize, a: usize, j: usize) -> usize {
        PER_AGENT_TIMES * self.n + field * self.n * self.w + a * self.w + j
    }

    fn time_rows(self) -> usize {
        self.per_entry_time(PER_ENTRY_TIMES, 0, 0)
    }

    /// Values of one env's observation.
    fn observation_len(self) -> usize {
        self.n * self.ow
    }
}

/// The metrics of one batch step (see the module docs): the fields of
/// [`StepMetrics`], each read as rows of one value per env — e.g.
/// `input_rate(a)[e]` is agent `a`'s input rate in env `e`, `action(a,
/// j)[e]` entry `j` of its split there.
///
/// The row accessors panic for an agent or entry past the model's (as
/// slice indexing does); [`Self::env`] gives one env's record.
///
/// ```
/// use dfaas_core::{BatchEnv, BatchMetrics, EnvConfig, EnvModel};
/// let model = EnvModel::new(&EnvConfig::default().build()?)?; // 2 agents
/// let mut batch = BatchEnv::new(model, 16)?;
/// batch.reset(7)?;
/// let actions = vec![0.5f32; 16 * 2 * batch.model().action_width()];
/// let mut metrics = BatchMetrics::default(); // sized by the first step
/// batch.step_with_metrics(&actions, &mut metrics)?;
/// // Node 0's rejects in every env, and env 3's whole record.
/// let rejected: u32 = metrics.incoming_rate_reject(0).iter().sum();
/// let env_3 = metrics.env(3)?;
/// assert_eq!(env_3.incoming_rate_reject[0], metrics.incoming_rate_reject(0)[3]);
/// assert!(rejected <= metrics.incoming_rate(0).iter().sum());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchMetrics {
    num_envs: usize,
    /// Values a row holds: `num_envs` rounded up to whole lane blocks.
    row_len: usize,
    rows: Rows,
    /// `[row_len]`.
    step: Vec<usize>,
    /// `[count row][row_len]`.
    counts: Vec<u32>,
    /// `[env][agent][obs_width]`, as [`crate::BatchEnv::observations`].
    observation: Vec<f32>,
    /// `[time row][row_len]`.
    times: Vec<f64>,
}

impl BatchMetrics {
    /// Zeroed metrics of `num_envs` envs of `model`.
    #[must_use]
    pub fn new(model: &EnvModel, num_envs: usize) -> Self {
        let rows = Rows::of(model);
        // Whole windows, and one lane block more: rows a power of two of
        // bytes apart would fall in the same cache sets, and a window pass
        // reads dozens of them at once.
        let row_len = num_envs.next_multiple_of(WINDOW) + LANES;
        Self {
            num_envs,
            row_len,
            rows,
            step: vec![0; row_len],
            counts: vec![0; rows.count_rows() * row_len],
            observation: vec![0.0; num_envs * rows.observation_len()],
            times: vec![0.0; rows.time_rows() * row_len],
        }
    }

    /// Sizes these metrics for `num_envs` envs of `model` (zeros) unless
    /// they already are.
    pub fn resize(&mut self, model: &EnvModel, num_envs: usize) {
        if self.rows != Rows::of(model) || self.num_envs != num_envs {
            *self = Self::new(model, num_envs);
        }
    }

    /// Number of envs.
    #[must_use]
    pub fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// Step index (0-based) within the episode, per env.
    #[must_use]
    pub fn step(&self) -> &[usize] {
        &self.step[..self.num_envs]
    }

    fn count_row(&self, row: usize) -> &[u32] {
        &self.counts[row * self.row_len..][..self.num_envs]
    }

    fn time_row(&self, row: usize) -> &[f64] {
        &self.times[row * self.row_len..][..self.num_envs]
    }

    /// Agent `a`'s index checked against the model's agents.
    fn agent(&self, a: usize) -> usize {
        assert!(a < self.rows.n, "agent {a} of {}", self.rows.n);
        a
    }

    /// Agent `a`'s entry `j` checked against the action width.
    fn entry(&self, a: usize, j: usize) -> (usize, usize) {
        assert!(j < self.rows.w, "entry {j} of {}", self.rows.w);
        (self.agent(a), j)
    }

    /// Agent `a`'s input rate, per env.
    #[must_use]
    pub fn input_rate(&self, a: usize) -> &[u32] {
        self.count_row(self.rows.input(self.agent(a)))
    }

    /// The observations the agents received before acting,
    /// `[env][agent][obs_width]` (env-major, as
    /// [`crate::BatchEnv::observations`]: a policy's input).
    #[must_use]
    pub fn observations(&self) -> &[f32] {
        &self.observation
    }

    /// Entry `j` of agent `a`'s split `[local, forward_1..k, reject]`, per
    /// env.
    #[must_use]
    pub fn action(&self, a: usize, j: usize) -> &[u32] {
        let (a, j) = self.entry(a, j);
        self.count_row(self.rows.action(a, j))
    }

    fn per_agent_count(&self, field: usize, a: usize) -> &[u32] {
        self.count_row(self.rows.per_agent_count(field, self.agent(a)))
    }

    /// Total requests node `a` processed or rejected at the model, per env.
    #[must_use]
    pub fn incoming_rate(&self, a: usize) -> &[u32] {
        self.per_agent_count(INCOMING_RATE, a)
    }

    /// Node `a`'s own local share, per env.
    #[must_use]
    pub fn incoming_rate_local(&self, a: usize) -> &[u32] {
        self.per_agent_count(INCOMING_LOCAL, a)
    }

    /// Requests forwarded to node `a`, per env.
    #[must_use]
    pub fn incoming_rate_forward(&self, a: usize) -> &[u32] {
        self.per_agent_count(INCOMING_FORWARD, a)
    }

    /// Requests node `a`'s model rejected, per env.
    #[must_use]
    pub fn incoming_rate_reject(&self, a: usize) -> &[u32] {
        self.per_agent_count(INCOMING_REJECT, a)
    }

    /// ... of which its own local requests, per env.
    #[must_use]
    pub fn incoming_rate_local_reject(&self, a: usize) -> &[u32] {
        self.per_agent_count(INCOMING_LOCAL_REJECT, a)
    }

    /// ... of which requests forwarded to it, per env.
    #[must_use]
    pub fn incoming_rate_forward_reject(&self, a: usize) -> &[u32] {
        self.per_agent_count(INCOMING_FORWARD_REJECT, a)
    }

    /// Agent `a`'s forwarded requests rejected by its neighbours, per env.
    #[must_use]
    pub fn forward_reject_rate(&self, a: usize) -> &[u32] {
        self.per_agent_count(FORWARD_REJECT_RATE, a)
    }

    /// Rejects of agent `a`'s requests, per env: entry 0 its local requests
    /// rejected at its own node, entry `1 + i` its forwards rejected by its
    /// i-th neighbour.
    #[must_use]
    pub fn forward_rejects(&self, a: usize, j: usize) -> &[u32] {
        let (a, j) = self.entry(a, j);
        self.count_row(self.rows.forward_rejects(a, j))
    }

    fn per_agent_time(&self, field: usize, a: usize) -> &[f64] {
        self.time_row(self.rows.per_agent_time(field, self.agent(a)))
    }

    fn per_entry_time(&self, field: usize, a: usize, j: usize) -> &[f64] {
        let (a, j) = self.entry(a, j);
        self.time_row(self.rows.per_entry_time(field, a, j))
    }

    /// Agent `a`'s reward (f64, as the reference computes it), per env.
    #[must_use]
    pub fn reward(&self, a: usize) -> &[f64] {
        self.per_agent_time(REWARD, a)
    }

    /// Node `a`'s response time when its local count is positive, else 0,
    /// per env.
    #[must_use]
    pub fn response_time_avg_local(&self, a: usize) -> &[f64] {
        self.per_agent_time(RESPONSE_LOCAL, a)
    }

    /// Mean of agent `a`'s neighbours' response times over its positive
    /// forwards, per env.
    #[must_use]
    pub fn response_time_avg_forwarded(&self, a: usize) -> &[f64] {
        self.per_agent_time(RESPONSE_FORWARDED, a)
    }

    /// The response time of agent `a`'s entry `j` (its neighbour `j − 1`;
    /// 0 without a positive forward), per env.
    #[must_use]
    pub fn response_time_avg_forwarded_to(&self, a: usize, j: usize) -> &[f64] {
        self.per_entry_time(RESPONSE_TO, a, j)
    }

    /// Mean forward network delay of agent `a` over its positive forwards
    /// (ms), per env.
    #[must_use]
    pub fn network_forward_delay_avg(&self, a: usize) -> &[f64] {
        self.per_agent_time(FORWARD_DELAY, a)
    }

    /// The forward network delay of agent `a`'s entry `j` (ms; 0 without a
    /// positive forward), per env.
    #[must_use]
    pub fn network_forward_delay_avg_to(&self, a: usize, j: usize) -> &[f64] {
        self.per_entry_time(FORWARD_DELAY_TO, a, j)
    }

    /// Mean return network delay of agent `a` over its positive forwards
    /// (ms), per env.
    #[must_use]
    pub fn network_return_delay_avg(&self, a: usize) -> &[f64] {
        self.per_agent_time(RETURN_DELAY, a)
    }

    /// The return network delay of agent `a`'s entry `j` (ms; 0 without a
    /// positive forward), per env.
    #[must_use]
    pub fn network_return_delay_avg_to(&self, a: usize, j: usize) -> &[f64] {
        self.per_entry_time(RETURN_DELAY_TO, a, j)
    }

    /// Env `env`'s metrics as one record.
    ///
    /// # Errors
    /// [`StepError::EnvIndex`] when `env` is not below [`Self::num_envs`].
    pub fn env(&self, env: usize) -> Result<StepMetrics, StepError> {
        let mut out = StepMetrics::default();
        self.copy_env(env, &mut out)?;
        Ok(out)
    }

    /// Every env's metrics as records, `[env]`.
    #[must_use]
    pub fn envs(&self) -> Vec<StepMetrics> {
        (0..self.num_envs)
            .map(|e| {
                let mut out = StepMetrics::default();
                self.copy_column(e, &mut out);
                out
            })
            .collect()
    }

    /// Writes env `env`'s metrics into `out` (resized to the batch's model
    /// when needed), reusing its allocations.
    ///
    /// # Errors
    /// [`StepError::EnvIndex`] when `env` is not below [`Self::num_envs`].
    pub fn copy_env(&self, env: usize, out: &mut StepMetrics) -> Result<(), StepError> {
        self.check_env(env)?;
        self.copy_column(env, out);
        Ok(())
    }

    /// Sets env `env`'s metrics to `metrics` (a record of the batch's
    /// model, e.g. from [`StepMetrics::record`]).
    ///
    /// # Errors
    /// [`StepError::EnvIndex`] when `env` is not below [`Self::num_envs`];
    /// [`StepError::InputLength`] naming a field of `metrics` whose length
    /// does not fit the batch's model.
    pub fn set_env(&mut self, env: usize, metrics: &StepMetrics) -> Result<(), StepError> {
        self.check_env(env)?;
        let Rows { n, w, ow } = self.rows;
        for (field, expected, got) in metrics.lengths() {
            let expected = expected.len_for(n, w, ow);
            if expected != got {
                return Err(StepError::InputLength {
                    field,
                    expected,
                    got,
                });
            }
        }
        self.writer().set_env(env, metrics);
        Ok(())
    }

    fn check_env(&self, env: usize) -> Result<(), StepError> {
        if env < self.num_envs {
            Ok(())
        } else {
            Err(StepError::EnvIndex {
                env,
                num_envs: self.num_envs,
            })
        }
    }

    /// Env `e`'s (below `num_envs`) column into `out`.
    fn copy_column(&self, e: usize, out: &mut StepMetrics) {
        let (r, len) = (self.rows, self.row_len);
        out.resize(r.n, r.w, r.ow);
        out.step = self.step[e];
        let rows = out
            .count_fields_mut()
            .into_iter()
            .flat_map(|f| f.iter_mut());
        for (v, row) in rows.zip(self.counts.chunks_exact(len)) {
            *v = row[e];
        }
        let ol = r.observation_len();
        out.observation
            .copy_from_slice(&self.observation[e * ol..(e + 1) * ol]);
        let rows = out.time_fields_mut().into_iter().flat_map(|f| f.iter_mut());
        for (v, row) in rows.zip(self.times.chunks_exact(len)) {
            *v = row[e];
        }
    }

    /// Takes `observations` (`[env][agent][obs_width]` of every env, what
    /// they stepped from) as these metrics' observations, leaving the
    /// previous ones there.
    pub(crate) fn swap_observations(&mut self, observations: &mut Vec<f32>) {
        debug_assert_eq!(observations.len(), self.observation.len());
        core::mem::swap(&mut self.observation, observations);
    }

    /// The writer of every env.
    pub(crate) fn writer(&mut self) -> MetricsWriter<'_> {
        MetricsWriter {
            rows: self.rows,
            step: &mut self.step,
            counts: RowsMut::Whole {
                values: &mut self.counts,
                stride: self.row_len,
            },
            observation: &mut self.observation,
            times: RowsMut::Whole {
                values: &mut self.times,
                stride: self.row_len,
            },
        }
    }

    /// Writers of runs of `per_run` envs (a whole number of windows; the
    /// last run takes the rest), `[run]`: each row cut among them.
    #[cfg(feature = "parallel")]
    pub(crate) fn run_writers(&mut self, per_run: usize) -> Vec<MetricsWriter<'_>> {
        /// `values` in `runs` parts, all but the last `len` long.
        fn cut<T>(values: &mut [T], len: usize, runs: usize) -> impl Iterator<Item = &mut [T]> {
            let (head, last) = values.split_at_mut(len * (runs - 1));
            head.chunks_exact_mut(len).chain(core::iter::once(last))
        }
        debug_assert_eq!(per_run % WINDOW, 0);
        let runs = self.num_envs.div_ceil(per_run).max(1);
        let (rows, ol) = (self.rows, self.rows.observation_len());
        let mut writers: Vec<_> = cut(&mut self.step, per_run, runs)
            .zip(cut(&mut self.observation, per_run * ol, runs))
            .map(|(step, observation)| {
                let counts = Vec::with_capacity(rows.count_rows());
                let times = Vec::with_capacity(rows.time_rows());
                (step, observation, counts, times)
            })
            .collect();
        for row in self.counts.chunks_exact_mut(self.row_len) {
            for (writer, part) in writers.iter_mut().zip(cut(row, per_run, runs)) {
                writer.2.push(part);
            }
        }
        for row in self.times.chunks_exact_mut(self.row_len) {
            for (writer, part) in writers.iter_mut().zip(cut(row, per_run, runs)) {
                writer.3.push(part);
            }
        }
        writers
            .into_iter()
            .map(|(step, observation, counts, times)| MetricsWriter {
                rows,
                step,
                counts: RowsMut::Parts(counts),
                observation,
                times: RowsMut::Parts(times),
            })
            .collect()
    }
}

/// Envs whose derived metrics [`MetricsWriter::finish_window`] computes
/// in one pass: rows are padded to whole windows of a few lane blocks (so
/// that what a pass reads back is still in cache).
pub(crate) const WINDOW: usize = 128 * LANES;

/// Quads of envs (the derived metrics' SIMD unit) in a window.
const QUADS: usize = WINDOW / 4;

/// One row's window of counts or of times, as quads of envs.
type Counts = [[u32; 4]; QUADS];
type Times = [[f64; 4]; QUADS];

/// Scratch of [`MetricsWriter::finish_window`].
#[derive(Debug, Clone)]
pub(crate) struct LaneMetricsScratch {
    /// Each node's response time at its total, `[node]`.
    node_times: Vec<Times>,
    /// One agent's forward and return delays at the envs' steps, per
    /// forward (when the envs are at different steps).
    forward_delays: Vec<Times>,
    return_delays: Vec<Times>,
}

impl LaneMetricsScratch {
    pub(crate) fn new(model: &EnvModel) -> Self {
        let zeros = [[0.0; 4]; QUADS];
        Self {
            node_times: vec![zeros; model.num_agents],
            forward_delays: vec![zeros; MAX_DEGREE],
            return_delays: vec![zeros; MAX_DEGREE],
        }
    }
}

/// The writer of a [`BatchMetrics`]' envs, or of a run of them.
pub(crate) struct MetricsWriter<'a> {
    rows: Rows,
    step: &'a mut [usize],
    counts: RowsMut<'a, u32>,
    observation: &'a mut [f32],
    times: RowsMut<'a, f64>,
}

/// Rows to write (env `i` of row `r` at `[r][i]`, whole windows): every
/// env's, one buffer; or a run's, a part of each row.
pub(crate) enum RowsMut<'a, T> {
    Whole {
        values: &'a mut [T],
        stride: usize,
    },
    /// A run's part of each row (`parallel`).
    #[cfg(feature = "parallel")]
    Parts(Vec<&'a mut [T]>),
}

impl<'a, T> RowsMut<'a, T> {
    /// Every row (or its part).
    fn parts(&mut self) -> Vec<&mut [T]> {
        match self {
            Self::Whole { values, stride } => values.chunks_exact_mut(*stride).collect(),
            #[cfg(feature = "parallel")]
            Self::Parts(parts) => parts.iter_mut().map(|part| &mut **part).collect(),
        }
    }

    /// Calls `f` on each row in order.
    fn each_row(&mut self, mut f: impl FnMut(&mut [T])) {
        match self {
            Self::Whole { values, stride } => {
                for row in values.chunks_exact_mut(*stride) {
                    f(row);
                }
            }
            #[cfg(feature = "parallel")]
            Self::Parts(parts) => {
                for row in parts {
                    f(row);
                }
            }
        }
    }
}

impl MetricsWriter<'_> {
    /// Sets env `i` to `m` (a record of the batch's model).
    pub(crate) fn set_env(&mut self, i: usize, m: &StepMetrics) {
        self.step[i] = m.step;
        let mut values = m.count_fields().into_iter().flatten();
        self.counts.each_row(|row| {
            if let Some(&v) = values.next() {
                row[i] = v;
            }
        });
        let ol = self.rows.observation_len();
        self.observation[i * ol..(i + 1) * ol].copy_from_slice(&m.observation);
        let mut values = m.time_fields().into_iter().flatten();
        self.times.each_row(|row| {
            if let Some(&v) = values.next() {
                row[i] = v;
            }
        });
    }

    /// Stores what the lane step `lanes` gave envs `i..i + LANES` (a whole
    /// lane block): their step indices `steps`, input rates `rates`
    /// `[agent]`, splits and rejects. [`Self::finish_window`] derives the
    /// rest (the batch hands over the observations).
    #[inline(always)]
    pub(crate) fn store_lanes(
        &mut self,
        i: usize,
        steps: &[usize],
        rates: &[i32x8],
        lanes: &LaneStep,
    ) {
        let r = self.rows;
        self.step[i..i + LANES].copy_from_slice(steps);
        // Input rates `[agent]`, then splits `[agent][w]`; after the derived
        // fields, rejects `[agent][w]` (entries past a degree are 0).
        let block = |v: &i32x8| bytemuck::cast::<i32x8, [u32; LANES]>(*v);
        let (stored_rows, derived_rows) = (r.per_agent_count(0, 0), PER_AGENT_COUNTS * r.n);
        match &mut self.counts {
            RowsMut::Whole { values, stride } => {
                let stride = *stride;
                let (stored, rest) = values.split_at_mut(stored_rows * stride);
                let (inputs, splits) = stored.split_at_mut(r.n * stride);
                let rejects = &mut rest[derived_rows * stride..];
                for (rows, values) in [
                    (inputs, rates),
                    (splits, &lanes.counts[..]),
                    (rejects, &lanes.rejects[..]),
                ] {
                    for (row, v) in rows.chunks_exact_mut(stride).zip(values) {
                        row[i..i + LANES].copy_from_slice(&block(v));
                    }
                }
            }
            #[cfg(feature = "parallel")]
            RowsMut::Parts(parts) => {
                let (stored, rest) = parts.split_at_mut(stored_rows);
                let (inputs, splits) = stored.split_at_mut(r.n);
                let rejects = &mut rest[derived_rows..];
                for (rows, values) in [
                    (inputs, rates),
                    (splits, &lanes.counts[..]),
                    (rejects, &lanes.rejects[..]),
                ] {
                    for (row, v) in rows.iter_mut().zip(values) {
                        row[i..i + LANES].copy_from_slice(&block(v));
                    }
                }
            }
        }
    }

    /// Derives every other metric of `envs` — whole lane blocks of one
    /// window whose steps, rates, splits and rejects are stored (by
    /// [`Self::store_lanes`], or by [`Self::set_env`] for envs between
    /// them) — from those: row by row, the same values as
    /// [`StepMetrics::record`] of each env.
    // Out of line: once per window, and inlined into the step it would
    // crowd out what the step itself inlines.
    #[inline(never)]
    pub(crate) fn finish_window(
        &mut self,
        model: &EnvModel,
        envs: Range<usize>,
        scratch: &mut LaneMetricsScratch,
    ) {
        if envs.is_empty() {
            return;
        }
        let r = self.rows;
        let (n, w, s) = (r.n, r.w, model.max_steps);
        let first = envs.start / WINDOW * WINDOW;
        let quads = (envs.start - first) / 4..(envs.end - first) / 4;
        let span = first..first + WINDOW;
        let (mut counts, mut times) = (self.counts.parts(), self.times.parts());
        // Rows read (rates, splits; rejects) around the rows written.
        let (stored, rest) = counts.split_at_mut(r.per_agent_count(0, 0));
        let (derived, rejects) = rest.split_at_mut(PER_AGENT_COUNTS * n);
        let (stored, rejects) = (&*stored, &*rejects);
        let split = |a: usize, j: usize| window(&stored[r.action(a, j)][span.clone()]);
        let rejected = |a: usize, j: usize| window(&rejects[a * w + j][span.clone()]);
        for (node, node_times) in scratch.node_times.iter_mut().enumerate() {
            let edges = model.in_offsets[node]..model.in_offsets[node + 1];
            let senders = model.in_senders[edges.clone()].iter();
            let own = (split(node, 0), rejected(node, 0));
            let mut incoming = [own; MAX_DEGREE];
            for (slot, (&sender, &index)) in incoming
                .iter_mut()
                .zip(senders.zip(&model.in_action_index[edges.clone()]))
            {
                *slot = (split(sender, index), rejected(sender, index));
            }
            let out = derived
                .iter_mut()
                .skip(node)
                .step_by(n)
                .map(|row| window_mut(&mut row[first..first + WINDOW]));
            let table = model.perf_table(node).response_times();
            macro_rules! totals {
                ($e:literal) => {
                    node_totals::<$e>(own, &incoming, out, table, node_times, quads.clone())
                };
            }
            // In-degrees are degrees: at most MAX_DEGREE where the lane step
            // applies.
            match edges.len() {
                0 => totals!(0),
                1 => totals!(1),
                2 => totals!(2),
                3 => totals!(3),
                4 => totals!(4),
                5 => totals!(5),
                6 => totals!(6),
                _ => unreachable!("the lane step takes degrees up to {MAX_DEGREE}"),
            }
        }
        // Each agent's delays at the envs' steps (one look-up when they are
        // at the same step, as a batch reset together is), then its times.
        let steps = &self.step[first + quads.start * 4..first + quads.end * 4];
        // (A fold rather than `all`: it vectorises.)
        let same_step = steps.iter().fold(0, |differ, &t| differ | (t ^ steps[0])) == 0;
        let topology = model.built().topology();
        let (agent_times, entry_times) = times.split_at_mut(PER_AGENT_TIMES * n);
        for (a, &k) in model.degrees.iter().enumerate() {
            let first_slot = topology.offsets()[a] as usize;
            let links = &topology.slot_links()[first_slot..first_slot + k];
            let mut same = SameStep {
                forward: [0.0; MAX_DEGREE],
                back: [0.0; MAX_DEGREE],
            };
            for (j, &link) in links.iter().enumerate() {
                let link = link as usize * s..(link as usize + 1) * s;
                let (forward, back) = (
                    &model.forward_delays[link.clone()],
                    &model.return_delays[link],
                );
                if same_step {
                    (same.forward[j], same.back[j]) = (forward[steps[0]], back[steps[0]]);
                } else {
                    let steps = &self.step[first..first + WINDOW];
                    for (q, quad) in steps
                        .chunks_exact(4)
                        .enumerate()
                        .take(quads.end)
                        .skip(quads.start)
                    {
                        scratch.forward_delays[j][q] = core::array::from_fn(|l| forward[quad[l]]);
                        scratch.return_delays[j][q] = core::array::from_fn(|l| back[quad[l]]);
                    }
                }
            }
            let rows = AgentRows {
                rate: window(&stored[r.input(a)][span.clone()]),
                split: &|j| split(a, j),
                rejected: &|j| rejected(a, j),
                node_time: &scratch.node_times[a],
                neighbours: topology.neighbours(a),
                node_times: &scratch.node_times,
            };
            let forward_reject_rate =
                window_mut(&mut derived[FORWARD_REJECT_RATE * n + a][span.clone()]);
            // The agent's time rows (`field·n + a`); its forwards' rows of
            // each per-entry field from `field·n·w + a·w + 1` on.
            let mut agent_rows = agent_times
                .iter_mut()
                .skip(a)
                .step_by(n)
                .map(|row| window_mut(&mut row[first..first + WINDOW]));
            let times = core::array::from_fn(|_| agent_rows.next().expect("a row per field"));
            let mut entries = entry_times
                .chunks_exact_mut(n * w)
                .map(|field| &mut field[a * w + 1..]);
            let entries = core::array::from_fn(|_| entries.next().expect("a block per field"));
            let out = AgentOut {
                forward_reject_rate,
                times,
                entries,
                first,
            };
            let per_env = PerEnv {
                forward: &scratch.forward_delays,
                back: &scratch.return_delays,
            };
            macro_rules! derive {
                ($k:literal) => {
                    if same_step {
                        derive_agent::<$k, _>(&rows, out, &same, quads.clone())
                    } else {
                        derive_agent::<$k, _>(&rows, out, &per_env, quads.clone())
                    }
                };
            }
            match k {
                0 => derive!(0),
                1 => derive!(1),
                2 => derive!(2),
                3 => derive!(3),
                4 => derive!(4),
                5 => derive!(5),
                6 => derive!(6),
                _ => unreachable!("the lane step takes degrees up to {MAX_DEGREE}"),
            }
        }
    }
}

/// A node's incoming counts — `own` its local split entry and the rejects
/// of it, `incoming` each of the `E` forwards to it and its rejects —
/// summed into its [`PER_AGENT_COUNTS`] incoming rows `out` (fields in
/// order), and its response time at the total, over `quads` of a window.
#[inline(never)]
fn node_totals<'a, const E: usize>(
    (own, own_lost): (&Counts, &Counts),
    incoming: &[(&Counts, &Counts)],
    mut out: impl Iterator<Item = &'a mut Counts>,
    table: &[f64],
    times: &mut Times,
    quads: Range<usize>,
) {
    let incoming: [(&Counts, &Counts); E] = core::array::from_fn(|e| incoming[e]);
    let mut row = || out.next().expect("a row per field");
    let (total, local, forwarded) = (row(), row(), row());
    let (rejected, local_rejected, forward_rejected) = (row(), row(), row());
    for q in quads.start..quads.end.min(QUADS) {
        let (mut count, mut lost) = (i32x4::ZERO, i32x4::ZERO);
        for (counts, rejects) in incoming {
            count += load(counts[q]);
            lost += load(rejects[q]);
        }
        local[q] = own[q];
        local_rejected[q] = own_lost[q];
        forwarded[q] = bytemuck::cast(count);
        forward_rejected[q] = bytemuck::cast(lost);
        let sum = load(own[q]) + count;
        total[q] = bytemuck::cast(sum);
        rejected[q] = bytemuck::cast(load(own_lost[q]) + lost);
        // Every total is in the table: the lane step looked its rejects up
        // there.
        let [a, b, c, d] = bytemuck::cast::<i32x4, [u32; 4]>(sum).map(|t| t as usize);
        times[q] = [table[a], table[b], table[c], table[d]];
    }
}

/// One agent's rows (windows) that [`derive_agent`] reads.
struct AgentRows<'a> {
    rate: &'a Counts,
    /// Entry `j` of its split; of its rejects (0 local, `1 + i` forward).
    split: &'a dyn Fn(usize) -> &'a Counts,
    rejected: &'a dyn Fn(usize) -> &'a Counts,
    /// Response times at its node; its neighbours; every node's.
    node_time: &'a Times,
    neighbours: &'a [u32],
    node_times: &'a [Times],
}

/// One agent's rows (windows) that [`derive_agent`] writes.
struct AgentOut<'a, 'w> {
    forward_reject_rate: &'a mut Counts,
    /// The [`PER_AGENT_TIMES`] fields.
    times: [&'a mut Times; PER_AGENT_TIMES],
    /// Each [`PER_ENTRY_TIMES`] field's rows from the agent's first
    /// forward on (windows at `first`).
    entries: [&'a mut [&'w mut [f64]]; PER_ENTRY_TIMES],
    first: usize,
}

/// Network delays of an agent's forwards at the envs' steps.
trait Delays {
    /// Forward `j`'s forward and return delays at quad `q`.
    fn at(&self, j: usize, q: usize) -> (f64x4, f64x4);
}

/// Every env at the same step: one value per forward.
struct SameStep {
    forward: [f64; MAX_DEGREE],
    back: [f64; MAX_DEGREE],
}

impl Delays for SameStep {
    #[inline(always)]
    fn at(&self, j: usize, _: usize) -> (f64x4, f64x4) {
        (f64x4::splat(self.forward[j]), f64x4::splat(self.back[j]))
    }
}

/// Envs at different steps: a window per forward.
struct PerEnv<'a> {
    forward: &'a [Times],
    back: &'a [Times],
}

impl Delays for PerEnv<'_> {
    #[inline(always)]
    fn at(&self, j: usize, q: usize) -> (f64x4, f64x4) {
        (f64x4::new(self.forward[j][q]), f64x4::new(self.back[j][q]))
    }
}

/// An agent's forward rejects, reward, response times and delays (its
/// degree `K`) over `quads` of a window: as [`StepMetrics::record`], whose
/// sums and means over positive forwards it takes as sums over every
/// forward with +0 for the others (no bit changes: every value is at least
/// 0) over at least 1.
#[inline(never)]
fn derive_agent<const K: usize, D: Delays>(
    rows: &AgentRows<'_>,
    out: AgentOut<'_, '_>,
    delays: &D,
    quads: Range<usize>,
) {
    let (rate, node_time) = (rows.rate, rows.node_time);
    let (local, reject, local_rejected) =
        ((rows.split)(0), (rows.split)(K + 1), (rows.rejected)(0));
    let forwards: [&Counts; K] = core::array::from_fn(|j| (rows.split)(1 + j));
    let forward_rejected: [&Counts; K] = core::array::from_fn(|j| (rows.rejected)(1 + j));
    let neighbour_times: [&Times; K] =
        core::array::from_fn(|j| &rows.node_times[rows.neighbours[j] as usize]);
    let AgentOut {
        forward_reject_rate,
        times,
        entries,
        first,
    } = out;
    let [
        reward,
        response_local,
        response_forwarded,
        forward_delay,
        return_delay,
    ] = times;
    let [response_to, forward_delay_to, return_delay_to] = entries.map(|field| {
        let mut rows = field
            .iter_mut()
            .map(|row| window_mut(&mut row[first..first + WINDOW]));
        let rows: [&mut Times; K] =
            core::array::from_fn(|_| rows.next().expect("a row per forward"));
        rows
    });
    let quads = quads.start..quads.end.min(QUADS);
    // Two passes, each with fewer rows than registers to address them.
    for q in quads.clone() {
        let local_count = load(local[q]);
        let mut served = local_count - load(local_rejected[q]) - load(reject[q]);
        let mut rejected = i32x4::ZERO;
        for j in 0..K {
            let lost = load(forward_rejected[j][q]);
            served += load(forwards[j][q]) - lost;
            rejected += lost;
        }
        forward_reject_rate[q] = bytemuck::cast(rejected);
        // A rate of 0 has served 0: 0 / 1 is the scalar's 0.
        let rate = to_f64(load(rate[q])).fast_max(f64x4::ONE);
        reward[q] = (to_f64(served) / rate).to_array();
        let local_sent = widen(local_count.simd_gt(i32x4::ZERO));
        response_local[q] = (f64x4::new(node_time[q]) & local_sent).to_array();
    }
    for q in quads {
        // Minus the number of positive forwards (masks are −1 where true).
        let mut negative_sent = i32x4::ZERO;
        // Sums of the forwards' times and delays (the first forward's as
        // they are: 0 + x is x for x >= 0).
        let mut sums: Option<[f64x4; 3]> = None;
        for j in 0..K {
            let positive = load(forwards[j][q]).simd_gt(i32x4::ZERO);
            negative_sent += positive;
            let sent = widen(positive);
            let (forward, back) = delays.at(j, q);
            let response = f64x4::new(neighbour_times[j][q]) & sent;
            let (forward, back) = (forward & sent, back & sent);
            response_to[j][q] = response.to_array();
            forward_delay_to[j][q] = forward.to_array();
            return_delay_to[j][q] = back.to_array();
            let values = [response, forward, back];
            sums = Some(match sums {
                None => values,
                Some([r, f, b]) => [r + response, f + forward, b + back],
            });
        }
        let sums = sums.unwrap_or([f64x4::ZERO; 3]);
        // Means over at least 1. Up to 2 forwards they are exact products
        // (x / 1 = x, x / 2 = x · 0.5), which spares the divider.
        let [response_mean, forward_mean, return_mean] = match K {
            0 | 1 => sums,
            2 => {
                let both = widen(negative_sent.simd_eq(i32x4::splat(-2)));
                let scale = f64x4::ONE - (f64x4::splat(0.5) & both);
                sums.map(|sum| sum * scale)
            }
            _ => {
                let sent = to_f64(i32x4::ZERO - negative_sent).fast_max(f64x4::ONE);
                sums.map(|sum| sum / sent)
            }
        };
        response_forwarded[q] = response_mean.to_array();
        forward_delay[q] = forward_mean.to_array();
        return_delay[q] = return_mean.to_array();
    }
}

/// A window of a row (`WINDOW` values) as quads.
fn window<T: bytemuck::Pod>(values: &[T]) -> &[[T; 4]; QUADS] {
    bytemuck::cast_slice::<T, [T; 4]>(values)
        .try_into()
        .expect("a window of WINDOW values")
}

fn window_mut<T: bytemuck::Pod>(values: &mut [T]) -> &mut [[T; 4]; QUADS] {
    bytemuck::cast_slice_mut::<T, [T; 4]>(values)
        .try_into()
        .expect("a window of WINDOW values")
}

/// Four counts (each below 2³¹) as i32 lanes.
#[inline(always)]
fn load(quad: [u32; 4]) -> i32x4 {
    i32x4::new(bytemuck::cast(quad))
}

/// The lanes of `v` as f64 (exact), a pair at a time (SSE2 converts pairs).
#[inline(always)]
fn to_f64(v: i32x4) -> f64x4 {
    let [_, _, c, d] = v.to_array();
    bytemuck::cast([
        f64x2::from_i32x4_lower2(v),
        f64x2::from_i32x4_lower2(i32x4::new([c, d, 0, 0])),
    ])
}

/// A 32-bit lane mask as a 64-bit one.
#[inline(always)]
fn widen(mask: i32x4) -> f64x4 {
    let [a, b, c, d] = mask.to_array();
    bytemuck::cast([a, a, b, b, c, c, d, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvConfig;
    use crate::{BatchEnv, StepError};

    fn model() -> EnvModel {
        let network = ["node_0 node_1 node_2", "node_1 node_2", "node_3 node_0"];
        EnvModel::new(&EnvConfig::with_network(&network).build().unwrap()).unwrap()
    }

    /// Every row accessor gives, per env, what that env's record holds: 11
    /// envs (a lane block and a tail of 3), over a few steps with rejects.
    #[test]
    fn rows_hold_each_envs_record() {
        let model = model();
        let (n, w, ow) = (model.num_agents, model.action_width, model.obs_width);
        let envs = 11;
        let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
        batch.reset(3).unwrap();
        let actions: Vec<f32> = (0..envs * n * w)
            .map(|i| ((i * 7) % 5) as f32 / 4.0)
            .collect();
        let mut metrics = BatchMetrics::default();
        for _ in 0..5 {
            batch.step_with_metrics(&actions, &mut metrics).unwrap();
        }
        let records = metrics.envs();
        assert_eq!(records.len(), envs);
        for (e, m) in records.iter().enumerate() {
            assert_eq!(metrics.step()[e], m.step);
            let observation = &metrics.observations()[e * n * ow..(e + 1) * n * ow];
            assert_eq!(observation, m.observation);
            for a in 0..n {
                let agent = |row: &[u32]| row[e];
                assert_eq!(agent(metrics.input_rate(a)), m.input_rate[a]);
                assert_eq!(agent(metrics.incoming_rate(a)), m.incoming_rate[a]);
                assert_eq!(
                    agent(metrics.incoming_rate_local(a)),
                    m.incoming_rate_local[a]
                );
                assert_eq!(
                    agent(metrics.incoming_rate_forward(a)),
                    m.incoming_rate_forward[a]
                );
                assert_eq!(
                    agent(metrics.incoming_rate_reject(a)),
                    m.incoming_rate_reject[a]
                );
                assert_eq!(
                    agent(metrics.incoming_rate_local_reject(a)),
                    m.incoming_rate_local_reject[a]
                );
                assert_eq!(
                    agent(metrics.incoming_rate_forward_reject(a)),
                    m.incoming_rate_forward_reject[a]
                );
                assert_eq!(
                    agent(metrics.forward_reject_rate(a)),
                    m.forward_reject_rate[a]
                );
                let time = |row: &[f64]| row[e].to_bits();
                let bits = |v: f64| v.to_bits();
                assert_eq!(time(metrics.reward(a)), bits(m.reward[a]));
                assert_eq!(
                    time(metrics.response_time_avg_local(a)),
                    bits(m.response_time_avg_local[a])
                );
                assert_eq!(
                    time(metrics.response_time_avg_forwarded(a)),
                    bits(m.response_time_avg_forwarded[a])
                );
                assert_eq!(
                    time(metrics.network_forward_delay_avg(a)),
                    bits(m.network_forward_delay_avg[a])
                );
                assert_eq!(
                    time(metrics.network_return_delay_avg(a)),
                    bits(m.network_return_delay_avg[a])
                );
                for j in 0..w {
                    let at = a * w + j;
                    assert_eq!(metrics.action(a, j)[e], m.action[at]);
                    assert_eq!(metrics.forward_rejects(a, j)[e], m.forward_rejects[at]);
                    assert_eq!(
                        time(metrics.response_time_avg_forwarded_to(a, j)),
                        bits(m.response_time_avg_forwarded_to[at])
                    );
                    assert_eq!(
                        time(metrics.network_forward_delay_avg_to(a, j)),
                        bits(m.network_forward_delay_avg_to[at])
                    );
                    assert_eq!(
                        time(metrics.network_return_delay_avg_to(a, j)),
                        bits(m.network_return_delay_avg_to[at])
                    );
                }
            }
        }
        // The steps had rejects and forwards, so the rows are not all 0.
        assert!((0..n).any(|a| metrics.incoming_rate_reject(a).iter().any(|&r| r > 0)));
        assert!((0..n).any(|a| {
            metrics
                .network_forward_delay_avg(a)
                .iter()
                .any(|&d| d > 0.0)
        }));
    }

    /// A record set into an env reads back; an env past the batch or a
    /// record of another shape is refused, naming it, and changes nothing.
    #[test]
    fn set_env_round_trips_and_refuses_what_does_not_fit() {
        let model = model();
        let mut metrics = BatchMetrics::new(&model, 9);
        let mut record = StepMetrics::new(&model);
        record.step = 4;
        record.input_rate[2] = 77;
        record.reward[1] = -0.25;
        record.network_return_delay_avg_to[model.action_width + 1] = 3.5;
        metrics.set_env(8, &record).unwrap();
        assert_eq!(metrics.env(8).unwrap(), record);
        assert_eq!(metrics.env(7).unwrap(), StepMetrics::new(&model));
        let before = metrics.clone();
        assert_eq!(
            metrics.set_env(9, &record),
            Err(StepError::EnvIndex {
                env: 9,
                num_envs: 9
            })
        );
        record.forward_rejects.pop();
        assert_eq!(
            metrics.set_env(0, &record),
            Err(StepError::InputLength {
                field: "forward_rejects",
                expected: model.num_agents * model.action_width,
                got: model.num_agents * model.action_width - 1,
            })
        );
        assert_eq!(metrics, before);
        assert!(metrics.env(9).is_err());
    }
}
