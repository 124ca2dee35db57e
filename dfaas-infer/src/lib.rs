//! # dfaas-infer
//!
//! Inference of policies trained by `dfaas-policies` (`train_ppo`): load a
//! checkpoint's `policies.safetensors` into a [`Policy`], then ask it for
//! one agent's action — the deterministic one (the Dirichlet mean, what
//! the trainer's evaluation uses) or, exploring, a Dirichlet sample from a
//! seeded stream ([`explore_stream`]).
//!
//! * [`Policy`] — the actors, their observation normalisers and the
//!   topology they were trained on; [`Policy::act`] and
//!   [`Policy::act_explore`] allocate nothing after loading;
//! * [`metadata`] — what the checkpoint holds for inference (a metadata
//!   entry and the normalisers' tensors; no `state.json`);
//! * [`agnostic`] — the inputs of the topology-agnostic layout, which
//!   acts for a node with any number of neighbours
//!   ([`Policy::act_node`]);
//! * [`mlp`] — the forward pass, with the trainer's order of operations,
//!   so that actions equal the trainer's bit for bit;
//! * [`error`] — typed errors naming field and value.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = std::fs::read("runs/default/checkpoints/iter_000300/policies.safetensors")?;
//! let mut policy = dfaas_infer::Policy::from_safetensors(&bytes)?;
//! let agent = policy.agent_index("node_0").ok_or("no node_0")?;
//! // [input_rate, prev_input_rate, prev_forward_to.., prev_forward_rejects_to..]
//! let observation = vec![80.0, 75.0, 3.0, 2.0, 0.0, 1.0];
//! let mut action = vec![0.0; policy.agents()[agent].action_len()];
//! policy.act(agent, &observation, &mut action)?;   // [local, forward.., reject]
//! # Ok(()) }
//! ```
//!
//! ## Features
//! * `std` (default): the system libm's float functions, as the trainer
//!   uses them (bit-identical actions), and run-time detection of the
//!   trainer's accumulation ([`mlp::Accumulation::host`]). Without it the
//!   crate is `no_std` + `alloc` and uses the `libm` crate (sqrt and fma are
//!   correctly rounded either way; exp and log1p of the concentration may
//!   differ from the system's in the last bit).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

/// `alloc` types used everywhere (the crate is `no_std`).
pub(crate) mod alloc_prelude {
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

pub mod agnostic;
pub mod error;
pub mod metadata;
pub mod mlp;
mod policy;

pub use error::{ActError, LoadError, ShapeError};
pub use policy::{Agent, CONCENTRATION_EPSILON, Layout, MAX_ENTRIES, Policy, explore_stream};
