//! Synthetic checkpoints in the trainer's format, written from the
//! format's description (`dfaas_infer::metadata`).

#![allow(dead_code)]

use dfaas_infer::metadata::{
    AgentMetadata, CONCENTRATION, InferenceMetadata, METADATA_KEY, METADATA_VERSION,
    actor_tensor_name, norm_mean_name, norm_var_name,
};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;

/// A tensor to write: name, dtype, shape, little-endian bytes.
pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// A deterministic value stream in [−1, 1).
pub struct Values(u64);

impl Values {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1))
    }

    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The metadata of `agents` (name, neighbour names) with `layout`.
pub fn metadata(layout: &str, agents: &[(&str, &[&str])]) -> InferenceMetadata {
    InferenceMetadata {
        version: METADATA_VERSION,
        layout: layout.into(),
        gossip: false,
        local_bias: 0.0,
        activation: "tanh".into(),
        concentration: CONCENTRATION.into(),
        normalize_observations: true,
        max_input_rate: 150,
        agents: agents
            .iter()
            .map(|(name, neighbours)| AgentMetadata {
                name: (*name).into(),
                neighbours: neighbours.iter().map(|n| (*n).into()).collect(),
            })
            .collect(),
    }
}

fn f32_tensor(name: String, shape: Vec<usize>, values: &[f32]) -> Tensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name, Dtype::F32, shape, bytes)
}

fn f64_tensor(name: String, values: &[f64]) -> Tensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name, Dtype::F64, vec![values.len()], bytes)
}

/// The tensors of `meta`'s actors with `hidden` widths (random weights)
/// and normalisers (means 50, variances 400).
pub fn tensors(meta: &InferenceMetadata, hidden: &[usize], seed: u64) -> Vec<Tensor> {
    let mut values = Values::new(seed);
    let n = meta.agents.len();
    let max_k = meta
        .agents
        .iter()
        .map(|a| a.neighbours.len())
        .max()
        .unwrap();
    let shapes: Vec<(usize, usize)> = if meta.layout == "agnostic" {
        let row = if meta.gossip {
            dfaas_infer::agnostic::GOSSIP_ROW_WIDTH
        } else {
            dfaas_infer::agnostic::ENTRY_WIDTH
        };
        vec![(row, 1)]
    } else if meta.layout == "shared" {
        vec![(2 + 2 * max_k + n, 2 + max_k)]
    } else {
        meta.agents
            .iter()
            .map(|a| (2 + 2 * a.neighbours.len(), 2 + a.neighbours.len()))
            .collect()
    };
    let mut out = Vec::new();
    for (p, &(input, output)) in shapes.iter().enumerate() {
        let mut widths = vec![input];
        widths.extend(hidden);
        widths.push(output);
        for (l, w) in widths.windows(2).enumerate() {
            let weights: Vec<f32> = (0..w[0] * w[1]).map(|_| values.next()).collect();
            let bias: Vec<f32> = (0..w[1]).map(|_| 0.1 * values.next()).collect();
            out.push(f32_tensor(
                actor_tensor_name(p, l, false),
                vec![w[1], w[0]],
                &weights,
            ));
            out.push(f32_tensor(actor_tensor_name(p, l, true), vec![w[1]], &bias));
        }
        if meta.normalize_observations {
            out.push(f64_tensor(norm_mean_name(p), &vec![50.0; input]));
            out.push(f64_tensor(norm_var_name(p), &vec![400.0; input]));
        }
    }
    out
}

/// A safetensors file of `tensors` with `metadata` entries.
pub fn serialize(tensors: &[Tensor], metadata: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, metadata).unwrap()
}

/// The metadata entries of `meta`.
pub fn entries(meta: &InferenceMetadata) -> HashMap<String, String> {
    HashMap::from([(
        METADATA_KEY.to_string(),
        serde_json::to_string(meta).unwrap(),
    )])
}

/// A whole checkpoint file: `meta`, hidden widths [8, 8].
pub fn checkpoint(meta: &InferenceMetadata) -> Vec<u8> {
    serialize(&tensors(meta, &[8, 8], 1), Some(entries(meta)))
}

/// A triangle of three nodes plus a fourth linked to node_0 only.
pub const TOPOLOGY: &[(&str, &[&str])] = &[
    ("node_0", &["node_1", "node_2", "node_3"]),
    ("node_1", &["node_0", "node_2"]),
    ("node_2", &["node_0", "node_1"]),
    ("node_3", &["node_0"]),
];
