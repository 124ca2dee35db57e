//! # dfaas-policies
//!
//! Policies for the DFaaS environment: multi-agent PPO with a Dirichlet
//! actor, written once over a [`Backend`](backend::Backend) (a CPU backend
//! here; a GPU one later), and heuristic baselines.
//!
//! * [`ppo`] — the trainer: layouts, rollout, targets, minibatch epochs;
//! * [`gae`] — generalised advantage estimation and standardisation;
//! * [`backend`] — the `Backend` trait, the PPO loss, the CPU backend;
//! * [`adam`] — Adam and gradient clipping;
//! * [`controller`] — the policy interface and evaluation;
//! * [`checkpoint`] — safetensors + JSON checkpoints, exact resume;
//! * [`error`] — the error types (field and value named, causes chained);
//! * [`gossip`] — what a node's neighbours tell it (their previous input
//!   rates, capacities and degrees), read by Recalc, Node-Margin and the
//!   agnostic layout trained with gossip;
//! * [`baselines`] — all-local, random, static 60/40, Recalc, Node-Margin,
//!   the single-node upper bound;
//! * [`special`] — ln Γ, ψ, ψ′;
//! * [`dirichlet`] — sampling, log-density, entropy, KL and gradients;
//! * [`mlp`] — dense networks, forward and backward ([`gemm`]: the one
//!   `unsafe` call, bounds-checked, into matrixmultiply);
#![deny(unsafe_code)]

pub mod adam;
pub mod backend;
pub mod baselines;
pub mod checkpoint;
pub mod controller;
pub mod dirichlet;
pub mod engine;
pub mod error;
pub mod gae;
pub mod gemm;
pub mod gossip;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod mlp;
pub mod oracle;
pub mod ppo;
pub mod special;
