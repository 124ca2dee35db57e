//! Error types: each names the field and the value that failed.

use crate::alloc_prelude::{String, Vec};
use core::fmt;

/// A network shape or buffer that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeError {
    /// Occurs when a network has fewer than 2 widths (input and output).
    TooFewLayers {
        /// Widths given.
        got: usize,
    },
    /// Occurs when a layer has width 0.
    ZeroWidth {
        /// Index of the layer in `[input, hidden.., output]`.
        layer: usize,
    },
    /// Occurs when the parameter count overflows `usize`.
    Overflow,
    /// Occurs when a slice is not as long as the shape requires.
    Length {
        /// The slice.
        field: &'static str,
        /// Length required.
        expected: usize,
        /// Length given.
        got: usize,
    },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewLayers { got } => {
                write!(f, "widths: at least 2 layers (input, output), got {got}")
            }
            Self::ZeroWidth { layer } => write!(f, "widths[{layer}]: must be >= 1, got 0"),
            Self::Overflow => write!(f, "widths: the parameter count overflows usize"),
            Self::Length {
                field,
                expected,
                got,
            } => write!(f, "{field}: expected {expected} values, got {got}"),
        }
    }
}

impl core::error::Error for ShapeError {}

/// A checkpoint that cannot be loaded for inference.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// Occurs when the bytes are not a valid safetensors file (truncated,
    /// a malformed header, offsets outside the data).
    Safetensors(safetensors::SafeTensorError),
    /// Occurs when the header has no `key` metadata entry: a checkpoint
    /// written before inference metadata existed (re-save it by resuming
    /// the run for one iteration, or with `checkpoint::save`).
    MissingMetadata {
        /// The metadata key looked for.
        key: &'static str,
    },
    /// Occurs when the metadata entry is not the JSON it should be.
    MetadataJson {
        /// The metadata key.
        key: &'static str,
        /// What the JSON parser said.
        message: String,
    },
    /// Occurs when a metadata field has a value inference cannot use.
    Metadata {
        /// The field (`layout`, `agents[2].neighbours[0]`, …).
        field: String,
        /// The value found.
        got: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Occurs when a tensor the metadata requires is missing.
    MissingTensor {
        /// Its name.
        name: String,
    },
    /// Occurs when a tensor has another element type.
    TensorDtype {
        /// Its name.
        name: String,
        /// The type required (`F32`, `F64`).
        expected: &'static str,
        /// The type found.
        got: String,
    },
    /// Occurs when a tensor has another shape.
    TensorShape {
        /// Its name.
        name: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// Occurs when a tensor holds a value it must not (NaN, ±∞, a negative
    /// variance).
    TensorValue {
        /// Its name.
        name: String,
        /// The flat index of the value.
        index: usize,
        /// The value.
        value: f64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Occurs when an actor's layer widths do not form a network.
    Shape {
        /// The actor (`policy0.actor`).
        name: String,
        /// Why.
        source: ShapeError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Safetensors(e) => write!(f, "policies.safetensors: {e}"),
            Self::MissingMetadata { key } => write!(
                f,
                "policies.safetensors: no `{key}` metadata entry: the checkpoint was written \
                 before inference metadata existed (resume its run for an iteration to re-save it)"
            ),
            Self::MetadataJson { key, message } => {
                write!(f, "policies.safetensors: metadata `{key}`: {message}")
            }
            Self::Metadata {
                field,
                got,
                expected,
            } => write!(f, "metadata {field}: must be {expected}, got {got}"),
            Self::MissingTensor { name } => write!(f, "tensor {name}: missing"),
            Self::TensorDtype {
                name,
                expected,
                got,
            } => write!(f, "tensor {name}: dtype must be {expected}, got {got}"),
            Self::TensorShape {
                name,
                expected,
                got,
            } => write!(f, "tensor {name}: shape must be {expected:?}, got {got:?}"),
            Self::TensorValue {
                name,
                index,
                value,
                rule,
            } => write!(f, "tensor {name}[{index}]: {rule}, got {value}"),
            Self::Shape { name, source } => write!(f, "{name}: {source}"),
        }
    }
}

impl core::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Safetensors(e) => Some(e),
            Self::Shape { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<safetensors::SafeTensorError> for LoadError {
    fn from(e: safetensors::SafeTensorError) -> Self {
        Self::Safetensors(e)
    }
}

/// An action request that does not fit the policy (nothing is written).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ActError {
    /// Occurs when the agent index is not one of the policy's agents.
    UnknownAgent {
        /// The index given.
        agent: usize,
        /// Agents of the policy.
        agents: usize,
    },
    /// Occurs when the observation is neither the agent's own `2 + 2k`
    /// values nor the padded `2 + 2·max_degree`.
    ObservationLength {
        /// The agent.
        agent: usize,
        /// Its own length `2 + 2k`.
        own: usize,
        /// The padded length.
        padded: usize,
        /// The length given.
        got: usize,
    },
    /// Occurs when an observation value is NaN or ±∞.
    ObservationValue {
        /// Its index in the observation.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Occurs when the network does not fit its buffers (not reachable
    /// through a loaded [`crate::Policy`], whose shapes are checked at load).
    Shape(ShapeError),
    /// Occurs when the action buffer is not `2 + k` long.
    ActionLength {
        /// The agent.
        agent: usize,
        /// `2 + k`.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// Occurs when [`crate::Policy::act_node`] is asked of a policy whose
    /// layout is tied to its training topology.
    NotAgnostic {
        /// The policy's layout.
        layout: &'static str,
    },
    /// Occurs when a node's action is not 2..=64 entries long or its
    /// observation not `2 + 2k` values for an action of `2 + k`.
    NodeLengths {
        /// Observation values given.
        observation: usize,
        /// Action entries given.
        action: usize,
    },
    /// Occurs when a policy trained with gossip is given none or gossip
    /// of the wrong length, or one trained without it is given some.
    GossipLength {
        /// Values it needs: `1 + 3k` ([`crate::agnostic::gossip_len`]), 0
        /// for a policy trained without gossip.
        expected: usize,
        /// Values given (0: none).
        got: usize,
    },
    /// Occurs when a gossip value is NaN or ±∞.
    GossipValue {
        /// Its index in the gossip.
        index: usize,
        /// The value.
        value: f32,
    },
}

impl fmt::Display for ActError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownAgent { agent, agents } => {
                write!(f, "agent: must be < {agents}, got {agent}")
            }
            Self::ObservationLength {
                agent,
                own,
                padded,
                got,
            } => write!(
                f,
                "observation of agent {agent}: expected {own} (or padded {padded}) values, got {got}"
            ),
            Self::ObservationValue { index, value } => {
                write!(f, "observation[{index}]: must be finite, got {value}")
            }
            Self::Shape(e) => write!(f, "network: {e}"),
            Self::ActionLength {
                agent,
                expected,
                got,
            } => write!(
                f,
                "action of agent {agent}: expected {expected} entries, got {got}"
            ),
            Self::NotAgnostic { layout } => write!(
                f,
                "layout: acting for any node needs a policy of layout agnostic, got {layout}"
            ),
            Self::NodeLengths {
                observation,
                action,
            } => write!(
                f,
                "node: an action of 2 + k entries (2..=64) needs an observation of 2 + 2k values, got an action of {action} and an observation of {observation}"
            ),
            Self::GossipLength { expected: 0, got } => write!(
                f,
                "gossip: the policy was trained without gossip and takes none, got {got} values"
            ),
            Self::GossipLength { expected, got: 0 } => write!(
                f,
                "gossip: the policy was trained with gossip and needs 1 + 3k = {expected} values (the node's capacity; each neighbour's previous input rate, capacity and degree), got none"
            ),
            Self::GossipLength { expected, got } => write!(
                f,
                "gossip: expected 1 + 3k = {expected} values (the node's capacity; each neighbour's previous input rate, capacity and degree), got {got}"
            ),
            Self::GossipValue { index, value } => {
                write!(f, "gossip[{index}]: must be finite, got {value}")
            }
        }
    }
}

impl core::error::Error for ActError {}

impl From<ShapeError> for ActError {
    fn from(e: ShapeError) -> Self {
        Self::Shape(e)
    }
}
