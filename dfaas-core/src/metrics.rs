//! Per-step metrics of one environment: every quantity the reference
//! records per agent and step (spec §6, "Per-step metrics"), in the padded
//! layout of [`crate::EnvModel`]. Per-neighbour arrays are
//! `[agent][action_width]` indexed like actions: entry `1 + i` is the
//! agent's i-th neighbour.
//!
//! Units: counts in requests per step; response times in the unit of the
//! service times; network delays in milliseconds.

use crate::alloc_prelude::*;
use crate::model::EnvModel;

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
    /// Per neighbour, `[agent][action_width]`.
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
        let n = model.num_agents();
        let wide = n * model.action_width();
        Self {
            step: 0,
            input_rate: vec![0; n],
            observation: vec![0.0; n * model.obs_width()],
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
        }
    }
}

/// Network delay in ms of `bytes` over a link: `access + bytes·8 /
/// (bandwidth·10⁶) · 1000`, in the reference's order of operations.
#[must_use]
pub fn network_delay_ms(access_delay_ms: f64, bytes: u64, bandwidth_mbps: f64) -> f64 {
    let bits = (bytes * 8) as f64;
    let bandwidth_bps = bandwidth_mbps * 1_000_000.0;
    access_delay_ms + bits / bandwidth_bps * 1000.0
}
