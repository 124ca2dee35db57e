//! Per-step metrics of one environment: every quantity the reference
//! records per agent and step (spec §6, "Per-step metrics"), in the padded
//! layout of [`crate::EnvModel`]. Per-neighbour arrays are
//! `[agent][action_width]` indexed like actions: entry `1 + i` is the
//! agent's i-th neighbour.
//!
//! Units: counts in requests per step; response times in the unit of the
//! service times; network delays in milliseconds.

use crate::alloc_prelude::*;
use crate::error::StepError;
use crate::model::EnvModel;
use crate::reward;

/// Metrics of one step of one environment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepMetrics {
    /// Step index (0-based) within the episode.
    pub step: usize,
    /// Input rate per agent.
    pub input_rate: Vec<u32>,
    /// Observation each agent received before acting, `[agent][obs_width]`.
    pub observation: Vec<f32>,
    /// The split `[local, forward_1..k, reject]`, `[agent][action_width]`.
    pub action: Vec<u32>,
    /// Total requests a node processed or rejected at the model.
    pub incoming_rate: Vec<u32>,
    /// The node's own local share.
    pub incoming_rate_local: Vec<u32>,
    /// Requests forwarded to the node.
    pub incoming_rate_forward: Vec<u32>,
    /// Requests the node's model rejected.
    pub incoming_rate_reject: Vec<u32>,
    /// ... of which its own local requests.
    pub incoming_rate_local_reject: Vec<u32>,
    /// ... of which requests forwarded to it.
    pub incoming_rate_forward_reject: Vec<u32>,
    /// The agent's forwarded requests rejected by its neighbours.
    pub forward_reject_rate: Vec<u32>,
    /// Rejects of the agent's requests, `[agent][action_width]`: entry 0 its
    /// local requests rejected at its own node, entry `1 + i` its forwards
    /// rejected by its i-th neighbour.
    pub forward_rejects: Vec<u32>,
    /// Reward per agent (f64, as the reference computes it).
    pub reward: Vec<f64>,
    /// Node response time when the local count is positive, else 0.
    pub response_time_avg_local: Vec<f64>,
    /// Mean of the neighbours' response times over positive forwards.
    pub response_time_avg_forwarded: Vec<f64>,
    /// Per neighbour (0 without a positive forward).
    pub response_time_avg_forwarded_to: Vec<f64>,
    /// Mean forward network delay over positive forwards (ms).
    pub network_forward_delay_avg: Vec<f64>,
    /// Per neighbour (ms; 0 without a positive forward).
    pub network_forward_delay_avg_to: Vec<f64>,
    /// Mean return network delay over positive forwards (ms).
    pub network_return_delay_avg: Vec<f64>,
    /// Per neighbour (ms; 0 without a positive forward).
    pub network_return_delay_avg_to: Vec<f64>,
}

impl StepMetrics {
    /// Zeroed metrics sized for `model`.
    #[must_use]
    pub fn new(model: &EnvModel) -> Self {
        let mut metrics = Self::default();
        metrics.resize(model.num_agents(), model.action_width(), model.obs_width());
        metrics
    }

    /// Each field's name, shape and length.
    pub(crate) fn lengths(&self) -> [(&'static str, Shape, usize); 20] {
        use Shape::{Agent, Entry, Observation};
        [
            ("input_rate", Agent, self.input_rate.len()),
            ("observation", Observation, self.observation.len()),
            ("action", Entry, self.action.len()),
            ("incoming_rate", Agent, self.incoming_rate.len()),
            ("incoming_rate_local", Agent, self.incoming_rate_local.len()),
            (
                "incoming_rate_forward",
                Agent,
                self.incoming_rate_forward.len(),
            ),
            (
                "incoming_rate_reject",
                Agent,
                self.incoming_rate_reject.len(),
            ),
            (
                "incoming_rate_local_reject",
                Agent,
                self.incoming_rate_local_reject.len(),
            ),
            (
                "incoming_rate_forward_reject",
                Agent,
                self.incoming_rate_forward_reject.len(),
            ),
            ("forward_reject_rate", Agent, self.forward_reject_rate.len()),
            ("forward_rejects", Entry, self.forward_rejects.len()),
            ("reward", Agent, self.reward.len()),
            (
                "response_time_avg_local",
                Agent,
                self.response_time_avg_local.len(),
            ),
            (
                "response_time_avg_forwarded",
                Agent,
                self.response_time_avg_forwarded.len(),
            ),
            (
                "response_time_avg_forwarded_to",
                Entry,
                self.response_time_avg_forwarded_to.len(),
            ),
            (
                "network_forward_delay_avg",
                Agent,
                self.network_forward_delay_avg.len(),
            ),
            (
                "network_forward_delay_avg_to",
                Entry,
                self.network_forward_delay_avg_to.len(),
            ),
            (
                "network_return_delay_avg",
                Agent,
                self.network_return_delay_avg.len(),
            ),
            (
                "network_return_delay_avg_to",
                Entry,
                self.network_return_delay_avg_to.len(),
            ),
            ("step", Shape::One, 1),
        ]
    }

    /// The count fields in the order of a [`crate::BatchMetrics`]' count
    /// rows.
    pub(crate) fn count_fields(&self) -> [&[u32]; 10] {
        [
            &self.input_rate,
            &self.action,
            &self.incoming_rate,
            &self.incoming_rate_local,
            &self.incoming_rate_forward,
            &self.incoming_rate_reject,
            &self.incoming_rate_local_reject,
            &self.incoming_rate_forward_reject,
            &self.forward_reject_rate,
            &self.forward_rejects,
        ]
    }

    /// [`Self::count_fields`], to write.
    pub(crate) fn count_fields_mut(&mut self) -> [&mut [u32]; 10] {
        [
            &mut self.input_rate,
            &mut self.action,
            &mut self.incoming_rate,
            &mut self.incoming_rate_local,
            &mut self.incoming_rate_forward,
            &mut self.incoming_rate_reject,
            &mut self.incoming_rate_local_reject,
            &mut self.incoming_rate_forward_reject,
            &mut self.forward_reject_rate,
            &mut self.forward_rejects,
        ]
    }

    /// The time fields in the order of a [`crate::BatchMetrics`]' time
    /// rows.
    pub(crate) fn time_fields(&self) -> [&[f64]; 8] {
        [
            &self.reward,
            &self.response_time_avg_local,
            &self.response_time_avg_forwarded,
            &self.network_forward_delay_avg,
            &self.network_return_delay_avg,
            &self.response_time_avg_forwarded_to,
            &self.network_forward_delay_avg_to,
            &self.network_return_delay_avg_to,
        ]
    }

    /// [`Self::time_fields`], to write.
    pub(crate) fn time_fields_mut(&mut self) -> [&mut [f64]; 8] {
        [
            &mut self.reward,
            &mut self.response_time_avg_local,
            &mut self.response_time_avg_forwarded,
            &mut self.network_forward_delay_avg,
            &mut self.network_return_delay_avg,
            &mut self.response_time_avg_forwarded_to,
            &mut self.network_forward_delay_avg_to,
            &mut self.network_return_delay_avg_to,
        ]
    }

    /// Whether every field has its length for `n` agents, action width `w`
    /// and observation width `ow`.
    fn fits(&self, n: usize, w: usize, ow: usize) -> bool {
        self.lengths()
            .iter()
            .all(|&(_, shape, len)| shape.len_for(n, w, ow) == len)
    }

    /// Sizes every field for `n` agents, action width `w` and observation
    /// width `ow` (zeros) unless it already fits.
    pub(crate) fn resize(&mut self, n: usize, w: usize, ow: usize) {
        if self.fits(n, w, ow) {
            return;
        }
        let wide = n * w;
        *self = Self {
            step: 0,
            input_rate: vec![0; n],
            observation: vec![0.0; n * ow],
            action: vec![0; wide],
            incoming_rate: vec![0; n],
            incoming_rate_local: vec![0; n],
            incoming_rate_forward: vec![0; n],
            incoming_rate_reject: vec![0; n],
            incoming_rate_local_reject: vec![0; n],
            incoming_rate_forward_reject: vec![0; n],
            forward_reject_rate: vec![0; n],
            forward_rejects: vec![0; wide],
            reward: vec![0.0; n],
            response_time_avg_local: vec![0.0; n],
            response_time_avg_forwarded: vec![0.0; n],
            response_time_avg_forwarded_to: vec![0.0; wide],
            network_forward_delay_avg: vec![0.0; n],
            network_forward_delay_avg_to: vec![0.0; wide],
            network_return_delay_avg: vec![0.0; n],
            network_return_delay_avg_to: vec![0.0; wide],
        };
    }
}

/// How many values a field of [`StepMetrics`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One.
    One,
    /// One per agent.
    Agent,
    /// One per action entry, `[agent][action_width]`.
    Entry,
    /// `[agent][obs_width]`.
    Observation,
}

impl Shape {
    /// The length for `n` agents, action width `w`, observation width `ow`.
    pub(crate) fn len_for(self, n: usize, w: usize, ow: usize) -> usize {
        match self {
            Self::One => 1,
            Self::Agent => n,
            Self::Entry => n * w,
            Self::Observation => n * ow,
        }
    }
}

impl StepMetrics {
    /// Derives every metric of step `step` from the step's integer state —
    /// the observation the agents received before it (`[agent][obs_width]`),
    /// input rates `[agent]`, splits and rejects `[agent][action_width]`
    /// (rejects: entry 0 local, `1 + i` of the i-th forward) — for the CPU
    /// batch and for state read back from the GPU. Any `StepMetrics` (e.g.
    /// `StepMetrics::default()`) is resized to `model` first.
    ///
    /// # Errors
    /// Nothing is written when the inputs are not a step's state:
    /// [`StepError::InputLength`] naming a slice that does not fit `model`,
    /// [`StepError::SplitTotal`] for an agent whose split does not sum to its
    /// input rate, [`StepError::InputValue`] for more rejects than requests
    /// in an entry or a node total beyond the model's response-time table.
    pub fn record(
        &mut self,
        model: &EnvModel,
        step: usize,
        observation: &[f32],
        rates: &[u32],
        counts: &[u32],
        rejects: &[u32],
    ) -> Result<(), StepError> {
        let (n, w) = (model.num_agents(), model.action_width());
        for (field, expected, got) in [
            ("observation", n * model.obs_width(), observation.len()),
            ("rates", n, rates.len()),
            ("counts", n * w, counts.len()),
            ("rejects", n * w, rejects.len()),
        ] {
            if expected != got {
                return Err(StepError::InputLength {
                    field,
                    expected,
                    got,
                });
            }
        }
        check_step_state(model, rates, counts, rejects)?;
        self.record_unchecked(model, step, observation, rates, counts, rejects);
        Ok(())
    }

    /// [`Self::record`] for slices known to be a step's state of `model`
    /// (the CPU batch's own).
    pub(crate) fn record_unchecked(
        &mut self,
        model: &EnvModel,
        step: usize,
        observation: &[f32],
        rates: &[u32],
        counts: &[u32],
        rejects: &[u32],
    ) {
        let (n, w) = (model.num_agents(), model.action_width());
        self.resize(n, w, model.obs_width());
        self.observation.copy_from_slice(observation);
        self.step = step;
        self.input_rate.copy_from_slice(rates);
        self.action.copy_from_slice(counts);
        self.forward_rejects.copy_from_slice(rejects);
        for node in 0..n {
            let (mut forwarded_in, mut rejected_in) = (0u32, 0u32);
            let edges = model.in_offsets[node]..model.in_offsets[node + 1];
            let senders = model.in_senders[edges.clone()].iter();
            for (&sender, &index) in senders.zip(&model.in_action_index[edges]) {
                let slot = sender * w + index;
                forwarded_in += counts[slot];
                rejected_in += rejects[slot];
            }
            let local = counts[node * w];
            self.incoming_rate_local[node] = local;
            self.incoming_rate_forward[node] = forwarded_in;
            self.incoming_rate[node] = local + forwarded_in;
            self.incoming_rate_local_reject[node] = rejects[node * w];
            self.incoming_rate_forward_reject[node] = rejected_in;
            self.incoming_rate_reject[node] = rejects[node * w] + rejected_in;
        }
        for a in 0..n {
            let k = model.degree(a);
            self.forward_reject_rate[a] = rejects[a * w + 1..=a * w + k].iter().sum();
            let numerator = reward::numerator_unchecked(
                &counts[a * w..a * w + k + 2],
                &rejects[a * w..a * w + k + 1],
            );
            self.reward[a] = reward::of_agent_f64(numerator, rates[a]);
        }
        if model.reward == crate::reward::RewardKind::Served {
            let (served, arrived) =
                crate::resolve::served_and_arrived(model, counts, rejects, |a| rates[a]);
            self.reward.fill(reward::ratio_f64(served, arrived));
        }
        self.record_times_and_delays(model, step, counts);
    }

    /// Response times and network delays of the forwards.
    fn record_times_and_delays(&mut self, model: &EnvModel, t: usize, counts: &[u32]) {
        let (w, s) = (model.action_width(), model.max_steps());
        let topology = model.built().topology();
        let node_time =
            |node: usize, total: u32| model.perf_table(node).response_times()[total as usize];
        for a in 0..model.num_agents() {
            let row = a * w..(a + 1) * w;
            let counts = &counts[row.clone()];
            self.response_time_avg_local[a] = if counts[0] > 0 {
                node_time(a, self.incoming_rate[a])
            } else {
                0.0
            };
            let slots = topology.offsets()[a] as usize..topology.offsets()[a + 1] as usize;
            let forwards = counts[1..].iter().zip(topology.neighbours(a));
            let per_slot = forwards.zip(&topology.slot_links()[slots]);
            let out = self.response_time_avg_forwarded_to[row.clone()][1..]
                .iter_mut()
                .zip(&mut self.network_forward_delay_avg_to[row.clone()][1..])
                .zip(&mut self.network_return_delay_avg_to[row][1..]);
            let (mut resp_sum, mut fwd_sum, mut ret_sum, mut count) = (0.0, 0.0, 0.0, 0usize);
            for (((&forwarded, &neighbour), &link), ((resp, fwd), ret)) in per_slot.zip(out) {
                (*resp, *fwd, *ret) = (0.0, 0.0, 0.0);
                if forwarded > 0 {
                    let neighbour = neighbour as usize;
                    let at = link as usize * s + t;
                    *resp = node_time(neighbour, self.incoming_rate[neighbour]);
                    *fwd = model.forward_delays[at];
                    *ret = model.return_delays[at];
                    resp_sum += *resp;
                    fwd_sum += *fwd;
                    ret_sum += *ret;
                    count += 1;
                }
            }
            let mean = |sum: f64| if count > 0 { sum / count as f64 } else { 0.0 };
            self.response_time_avg_forwarded[a] = mean(resp_sum);
            self.network_forward_delay_avg[a] = mean(fwd_sum);
            self.network_return_delay_avg[a] = mean(ret_sum);
        }
    }
}

/// Checks that `counts` splits each agent's rate (`[local, forwards..,
/// reject]` summing to `rates[a]`), that no entry rejects more than it
/// holds, and that every node's total has a response time in its table.
fn check_step_state(
    model: &EnvModel,
    rates: &[u32],
    counts: &[u32],
    rejects: &[u32],
) -> Result<(), StepError> {
    let w = model.action_width();
    for (a, &rate) in rates.iter().enumerate() {
        let k = model.degree(a);
        let row = &counts[a * w..a * w + k + 2];
        let sum: u64 = row.iter().map(|&c| u64::from(c)).sum();
        if sum != u64::from(rate) {
            return Err(StepError::SplitTotal {
                agent: a,
                sum,
                rate,
            });
        }
        for e in a * w..=a * w + k {
            if rejects[e] > counts[e] {
                return Err(StepError::InputValue {
                    field: "rejects",
                    index: e,
                    value: u64::from(rejects[e]),
                    max: u64::from(counts[e]),
                });
            }
        }
    }
    for node in 0..model.num_agents() {
        let forwarded: u64 = (model.in_offsets[node]..model.in_offsets[node + 1])
            .map(|e| u64::from(counts[model.in_senders[e] * w + model.in_action_index[e]]))
            .sum();
        let total = u64::from(counts[node * w]) + forwarded;
        let max = u64::from(model.perf_table(node).max_total());
        if total > max {
            return Err(StepError::InputValue {
                field: "incoming_rate",
                index: node,
                value: total,
                max,
            });
        }
    }
    Ok(())
}

/// Network delay in ms of `bytes` over a link: `access + bytes·8 /
/// (bandwidth·10⁶) · 1000`, in the reference's order of operations.
#[must_use]
pub fn network_delay_ms(access_delay_ms: f64, bytes: u64, bandwidth_mbps: f64) -> f64 {
    // In f64 (exact below 2⁵³ bits), so no size can overflow.
    let bits = bytes as f64 * 8.0;
    let bandwidth_bps = bandwidth_mbps * 1_000_000.0;
    access_delay_ms + bits / bandwidth_bps * 1000.0
}
