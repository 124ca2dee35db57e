//! What a checkpoint's `policies.safetensors` holds for inference, besides
//! the actors' `policy{p}.actor.layer{i}.{weight|bias}` tensors: one
//! metadata entry ([`METADATA_KEY`], a JSON [`InferenceMetadata`]) and,
//! when observations were normalised, each policy's normaliser as two f64
//! tensors ([`norm_mean_name`], [`norm_var_name`]). The trainer writes
//! them (`dfaas_policies::checkpoint::save`); nothing of `state.json` is
//! needed.

use crate::alloc_prelude::{String, Vec, format};

/// The safetensors metadata key of the [`InferenceMetadata`] JSON.
pub const METADATA_KEY: &str = "dfaas.inference";

/// The version of [`InferenceMetadata`] this crate reads and writes.
pub const METADATA_VERSION: u32 = 1;

/// How the actor's outputs become Dirichlet concentrations:
/// `softplus(output) + 1e-7` (the reference's patched RLlib).
pub const CONCENTRATION: &str = "softplus+1e-7";

/// Everything inference needs besides the tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InferenceMetadata {
    /// [`METADATA_VERSION`].
    pub version: u32,
    /// `independent`, `shared`, `mappo` or `agnostic` (the trainer's
    /// layout names).
    pub layout: String,
    /// Whether the agnostic actor reads gossip rows
    /// ([`crate::agnostic::gossip_rows`]; absent in checkpoints written
    /// before gossip existed: false).
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub gossip: bool,
    /// Fixed bias added to each agent's local output (its first Dirichlet
    /// entry) before softplus (absent in checkpoints written before it
    /// existed: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_bias: f32,
    /// Hidden activation: `tanh` or `relu`.
    pub activation: String,
    /// [`CONCENTRATION`].
    pub concentration: String,
    /// Whether actor inputs are normalised (then every policy has
    /// [`norm_mean_name`] / [`norm_var_name`] tensors).
    pub normalize_observations: bool,
    /// Largest input rate an agent could receive in training (requests per
    /// step; the environment's `max_input_rate`).
    pub max_input_rate: u32,
    /// The agents in agent order.
    pub agents: Vec<AgentMetadata>,
}

/// One agent of the training topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentMetadata {
    /// Its node name (`node_0`).
    pub name: String,
    /// Its neighbours' node names in neighbour order: the order of its
    /// `forward_1..k` action entries and observation features.
    pub neighbours: Vec<String>,
}

/// Whether `x` is 0 (the default local bias, not written).
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// Name of policy `p`'s observation means (f64, `[input width]`).
#[must_use]
pub fn norm_mean_name(p: usize) -> String {
    format!("policy{p}.obs_norm.mean")
}

/// Name of policy `p`'s observation variances (f64, `[input width]`; 1
/// where fewer than two rows were seen): inputs are normalised as
/// `clamp((x − mean) / max(√var, 1e-4), −10, 10)` in f64.
#[must_use]
pub fn norm_var_name(p: usize) -> String {
    format!("policy{p}.obs_norm.var")
}

/// Name of layer `i`'s weights (`[out, in]`) or biases (`[out]`) of policy
/// `p`'s actor.
#[must_use]
pub fn actor_tensor_name(p: usize, layer: usize, bias: bool) -> String {
    let kind = if bias { "bias" } else { "weight" };
    format!("policy{p}.actor.layer{layer}.{kind}")
}
