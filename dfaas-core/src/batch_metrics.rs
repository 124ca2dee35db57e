//! [`BatchMetrics`]: every per-step metric of every env of a batch, field
//! by field with the envs innermost (`[agent][env]`, `[agent][entry][env]`),
//! so that the lane step stores eight envs of a value at once and a sum
//! over envs reads one contiguous row. Env `e`'s values are the
//! [`StepMetrics`] of its step ([`BatchMetrics::env`]), bit for bit.
//!
//! Units as in [`StepMetrics`]: counts in requests per step; response
//! times in the unit of the service times; network delays in ms.

use crate::alloc_prelude::*;
use crate::error::StepError;
use crate::lanes::{LANES, LaneStep};
use crate::metrics::StepMetrics;
use crate::model::EnvModel;
use wide::{f32x4, f64x2, f64x4, i32x4, i32x8};

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
/// fields `[agent][w]`. Observation rows: `[agent][ow]`.
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

    fn observation_rows(self) -> usize {
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
    /// `[env]`.
    step: Vec<usize>,
    /// `[count row][row_len]`.
    counts: Vec<u32>,
    /// `[agent][obs_width][row_len]`.
    observation: Vec<f32>,
    /// `[time row][row_len]`.
    times: Vec<f64>,
}

impl BatchMetrics {
    /// Zeroed metrics of `num_envs` envs of `model`.
    #[must_use]
    pub fn new(model: &EnvModel, num_envs: usize) -> Self {
        let rows = Rows::of(model);
        let row_len = num_envs.next_multiple_of(LANES);
        Self {
            num_envs,
            row_len,
            rows,
            step: vec![0; num_envs],
            counts: vec![0; rows.count_rows() * row_len],
            observation: vec![0.0; rows.observation_rows() * row_len],
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
        &self.step
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

    /// Entry `j` of the observation agent `a` received before acting, per
    /// env.
    #[must_use]
    pub fn observation(&self, a: usize, j: usize) -> &[f32] {
        assert!(
            j < self.rows.ow,
            "observation entry {j} of {}",
            self.rows.ow
        );
        let row = self.agent(a) * self.rows.ow + j;
        &self.observation[row * self.row_len..][..self.num_envs]
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
        for (v, row) in out
            .observation
            .iter_mut()
            .zip(self.observation.chunks_exact(len))
        {
            *v = row[e];
        }
        let rows = out.time_fields_mut().into_iter().flat_map(|f| f.iter_mut());
        for (v, row) in rows.zip(self.times.chunks_exact(len)) {
            *v = row[e];
        }
    }

    /// The writer of every env.
    pub(crate) fn writer(&mut self) -> MetricsWriter<'_> {
        MetricsWriter {
            rows: self.rows,
            stride: self.row_len,
            step: &mut self.step,
            counts: &mut self.counts,
            observation: &mut self.observation,
            times: &mut self.times,
        }
    }

    /// Copies every env of `run` (metrics of the same model) into envs
    /// `first..first + run.num_envs()`.
    #[cfg(feature = "parallel")]
    pub(crate) fn copy_run(&mut self, first: usize, run: &Self) {
        fn copy<T: Copy>(
            to: &mut [T],
            from: &[T],
            (to_len, from_len): (usize, usize),
            at: &core::ops::Range<usize>,
        ) {
            for (to, from) in to.chunks_exact_mut(to_len).zip(from.chunks_exact(from_len)) {
                to[at.clone()].copy_from_slice(&from[..at.len()]);
            }
        }
        if run.num_envs == 0 {
            return;
        }
        let at = first..first + run.num_envs;
        let lens = (self.row_len, run.row_len);
        self.step[at.clone()].copy_from_slice(&run.step);
        copy(&mut self.counts, &run.counts, lens, &at);
        copy(&mut self.observation, &run.observation, lens, &at);
        copy(&mut self.times, &run.times, lens, &at);
    }
}

/// The lane metrics' scratch: a lane block's node response times.
#[derive(Debug, Clone)]
pub(crate) struct LaneMetricsScratch {
    /// `[node][lane]`.
    node_times: Vec<[f64; LANES]>,
}

impl LaneMetricsScratch {
    pub(crate) fn new(model: &EnvModel) -> Self {
        Self {
            node_times: vec![[0.0; LANES]; model.num_agents],
        }
    }
}

/// Eight f64 lanes.
type F64x8 = [f64x4; 2];

/// The lanes of `v` as f64 (exact), two at a time (SSE2 converts pairs).
#[inline(always)]
fn to_f64(v: i32x8) -> F64x8 {
    let v = v.to_array();
    core::array::from_fn(|h| {
        let pairs: [f64x2; 2] = core::array::from_fn(|p| {
            let at = 4 * h + 2 * p;
            f64x2::from_i32x4_lower2(i32x4::new([v[at], v[at + 1], 0, 0]))
        });
        bytemuck::cast(pairs)
    })
}

/// All ones where `v > 0`, else 0, as f64 lanes.
#[inline(always)]
fn positive_count(v: i32x8) -> F64x8 {
    let m = v.simd_gt(i32x8::ZERO).to_array();
    // Each 32-bit mask twice: a 64-bit mask.
    core::array::from_fn(|h| {
        let at = 4 * h;
        bytemuck::cast([
            i32x4::new([m[at], m[at], m[at + 1], m[at + 1]]),
            i32x4::new([m[at + 2], m[at + 2], m[at + 3], m[at + 3]]),
        ])
    })
}

/// `x` in every lane.
#[inline(always)]
fn splat(x: f64) -> F64x8 {
    bytemuck::cast([f64x2::splat(x); 4])
}

/// All ones where `v > 0`, else 0.
#[inline(always)]
fn positive(v: F64x8) -> F64x8 {
    v.map(|h| h.simd_gt(f64x4::ZERO))
}

/// `v` where `mask` is all ones, +0 where it is 0.
#[inline(always)]
fn masked(v: F64x8, mask: F64x8) -> F64x8 {
    [v[0] & mask[0], v[1] & mask[1]]
}

#[inline(always)]
fn add(a: F64x8, b: F64x8) -> F64x8 {
    [a[0] + b[0], a[1] + b[1]]
}

/// `numerator / denominator` where the denominator is positive, else +0
/// (IEEE division, lane by lane, as the scalar's).
#[inline(always)]
fn ratio(numerator: F64x8, denominator: F64x8) -> F64x8 {
    let quotient = [numerator[0] / denominator[0], numerator[1] / denominator[1]];
    masked(quotient, positive(denominator))
}

/// The writer of a [`BatchMetrics`]' rows (value of row `r`, env `i` at
/// `r·stride + i`).
pub(crate) struct MetricsWriter<'a> {
    rows: Rows,
    stride: usize,
    step: &'a mut [usize],
    counts: &'a mut [u32],
    observation: &'a mut [f32],
    times: &'a mut [f64],
}

impl MetricsWriter<'_> {
    /// Sets env `i` to `m` (a record of the batch's model).
    pub(crate) fn set_env(&mut self, i: usize, m: &StepMetrics) {
        let stride = self.stride;
        self.step[i] = m.step;
        let values = m.count_fields().into_iter().flatten();
        for (row, &v) in self.counts.chunks_exact_mut(stride).zip(values) {
            row[i] = v;
        }
        for (row, &v) in self
            .observation
            .chunks_exact_mut(stride)
            .zip(&m.observation)
        {
            row[i] = v;
        }
        let values = m.time_fields().into_iter().flatten();
        for (row, &v) in self.times.chunks_exact_mut(stride).zip(values) {
            row[i] = v;
        }
    }

    /// Records envs `i..i + LANES` from the lane step `lanes` that stepped
    /// them: `steps` their step indices, `observation` what they stepped
    /// from (`[lane][agent][obs_width]`), `rates` their input rates
    /// `[agent]`. The same values as [`StepMetrics::record`] of each env;
    /// entries past an agent's degree stay as they are (0).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_lanes(
        &mut self,
        model: &EnvModel,
        i: usize,
        steps: &[usize],
        observation: &[f32],
        rates: &[i32x8],
        lanes: &LaneStep,
        scratch: &mut LaneMetricsScratch,
    ) {
        // Rows as lane blocks: `i` and the rows' length are whole blocks.
        let (r, blocks, b) = (self.rows, self.stride / LANES, i / LANES);
        let (w, s) = (r.w, model.max_steps);
        let counts_out: &mut [[u32; LANES]] = bytemuck::cast_slice_mut(self.counts);
        let times_out: &mut [[f64; LANES]] = bytemuck::cast_slice_mut(self.times);
        let observation_out: &mut [[f32; LANES]] = bytemuck::cast_slice_mut(self.observation);
        let mut put = |row: usize, v: i32x8| counts_out[row * blocks + b] = bytemuck::cast(v);
        self.step[i..i + LANES].copy_from_slice(steps);
        transpose_into(
            observation,
            r.observation_rows(),
            observation_out,
            blocks,
            b,
        );
        // What each node received and rejected, and its response time.
        for node in 0..r.n {
            let (mut total, mut rejected) = (i32x8::ZERO, i32x8::ZERO);
            let (local, local_rejected) = (lanes.counts[node * w], lanes.rejects[node * w]);
            let edges = model.in_offsets[node]..model.in_offsets[node + 1];
            let senders = model.in_senders[edges.clone()].iter();
            for (&sender, &index) in senders.zip(&model.in_action_index[edges]) {
                total += lanes.counts[sender * w + index];
                rejected += lanes.rejects[sender * w + index];
            }
            let (forwarded, forward_rejected) = (total, rejected);
            total += local;
            rejected += local_rejected;
            put(r.per_agent_count(INCOMING_RATE, node), total);
            put(r.per_agent_count(INCOMING_LOCAL, node), local);
            put(r.per_agent_count(INCOMING_FORWARD, node), forwarded);
            put(r.per_agent_count(INCOMING_REJECT, node), rejected);
            put(
                r.per_agent_count(INCOMING_LOCAL_REJECT, node),
                local_rejected,
            );
            put(
                r.per_agent_count(INCOMING_FORWARD_REJECT, node),
                forward_rejected,
            );
            let table = model.perf_table(node).response_times();
            let total = total.to_array();
            scratch.node_times[node] = core::array::from_fn(|l| table[total[l] as usize]);
        }
        // Delays of a link at the lanes' steps (one look-up when the lanes
        // are at the same step, as a batch reset together is).
        let same_step = steps.iter().all(|&t| t == steps[0]);
        let delays = |table: &[f64], link: usize| -> F64x8 {
            let row = &table[link * s..(link + 1) * s];
            if same_step {
                splat(row[steps[0]])
            } else {
                core::array::from_fn(|h| {
                    f64x4::new(core::array::from_fn(|l| row[steps[4 * h + l]]))
                })
            }
        };
        let topology = model.built().topology();
        let node_times = &scratch.node_times;
        for (a, &k) in model.degrees.iter().enumerate() {
            let (counts, rejects) = (&lanes.counts[a * w..], &lanes.rejects[a * w..]);
            put(r.input(a), rates[a]);
            for (j, &count) in counts[..k + 2].iter().enumerate() {
                put(r.action(a, j), count);
            }
            let mut served = counts[0] - rejects[0] - counts[k + 1];
            let mut forward_rejected = i32x8::ZERO;
            put(r.forward_rejects(a, 0), rejects[0]);
            for (j, (&count, &rejected)) in counts[1..=k].iter().zip(&rejects[1..=k]).enumerate() {
                put(r.forward_rejects(a, 1 + j), rejected);
                forward_rejected += rejected;
                served += count - rejected;
            }
            put(r.per_agent_count(FORWARD_REJECT_RATE, a), forward_rejected);
            let put_f64 = |times_out: &mut [[f64; LANES]], row: usize, v: F64x8| {
                times_out[row * blocks + b] = bytemuck::cast(v);
            };
            put_f64(
                times_out,
                r.per_agent_time(REWARD, a),
                ratio(to_f64(served), to_f64(rates[a])),
            );
            let node_time = |node: usize| -> F64x8 { bytemuck::cast(node_times[node]) };
            let local = masked(node_time(a), positive_count(counts[0]));
            put_f64(times_out, r.per_agent_time(RESPONSE_LOCAL, a), local);
            // Each forward's time and delays, 0 where nothing was sent.
            let first_slot = topology.offsets()[a] as usize;
            let slots = topology
                .neighbours(a)
                .iter()
                .zip(&topology.slot_links()[first_slot..]);
            // Masks are −1 where true: subtracting counts.
            let mut positives = i32x8::ZERO;
            for (j, (&neighbour, &link)) in (1..k + 1).zip(slots) {
                positives -= counts[j].simd_gt(i32x8::ZERO);
                let sent = positive_count(counts[j]);
                let link = link as usize;
                put_f64(
                    times_out,
                    r.per_entry_time(RESPONSE_TO, a, j),
                    masked(node_time(neighbour as usize), sent),
                );
                put_f64(
                    times_out,
                    r.per_entry_time(FORWARD_DELAY_TO, a, j),
                    masked(delays(&model.forward_delays, link), sent),
                );
                put_f64(
                    times_out,
                    r.per_entry_time(RETURN_DELAY_TO, a, j),
                    masked(delays(&model.return_delays, link), sent),
                );
            }
            let positives = to_f64(positives);
            // Their means over positive forwards, summed in neighbour order
            // from the rows just written: adding the +0 of the others
            // changes no bit of the scalar's sums.
            for (mean, entries) in [
                (RESPONSE_FORWARDED, RESPONSE_TO),
                (FORWARD_DELAY, FORWARD_DELAY_TO),
                (RETURN_DELAY, RETURN_DELAY_TO),
            ] {
                let mut sum = [f64x4::ZERO; 2];
                for j in 1..k + 1 {
                    let row: F64x8 =
                        bytemuck::cast(times_out[r.per_entry_time(entries, a, j) * blocks + b]);
                    sum = add(sum, row);
                }
                put_f64(times_out, r.per_agent_time(mean, a), ratio(sum, positives));
            }
        }
    }
}

/// Writes `out[c·blocks + b][l] = input[l·columns + c]` for the `LANES`
/// rows `l` of `columns` values in `input`: eight env-major rows into lane
/// block `b` of each column's row, by 4×4 transposes.
fn transpose_into(
    input: &[f32],
    columns: usize,
    out: &mut [[f32; LANES]],
    blocks: usize,
    b: usize,
) {
    let mut rows = input.chunks_exact(columns);
    let rows: [&[f32]; LANES] = core::array::from_fn(|_| rows.next().unwrap_or_default());
    let whole = columns / 4 * 4;
    for c in (0..whole).step_by(4) {
        let quad = |first: usize| -> [f32x4; 4] {
            core::array::from_fn(|l| {
                let mut values = [0.0; 4];
                values.copy_from_slice(&rows[first + l][c..c + 4]);
                f32x4::new(values)
            })
        };
        let (low, high) = (f32x4::transpose(quad(0)), f32x4::transpose(quad(4)));
        for (j, (low, high)) in low.iter().zip(&high).enumerate() {
            out[(c + j) * blocks + b] = bytemuck::cast([*low, *high]);
        }
    }
    for c in whole..columns {
        out[c * blocks + b] = core::array::from_fn(|l| rows[l][c]);
    }
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
                for j in 0..ow {
                    assert_eq!(
                        metrics.observation(a, j)[e].to_bits(),
                        m.observation[a * ow + j].to_bits()
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
