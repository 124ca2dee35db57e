//! # dfaas-policies
//!
//! Policies for the DFaaS environment: multi-agent PPO with a Dirichlet
//! actor, written once over a [`Backend`](backend::Backend) (a CPU backend
//! here; a GPU one later), and heuristic baselines.
//!
//! * [`special`] — ln Γ, ψ, ψ′;
//! * [`dirichlet`] — sampling, log-density, entropy, KL and gradients;
//! * [`mlp`] — dense networks, forward and backward ([`gemm`]: the one
//!   `unsafe` call, bounds-checked, into matrixmultiply);
#![deny(unsafe_code)]

pub mod adam;
pub mod backend;
pub mod dirichlet;
pub mod gemm;
pub mod mlp;
pub mod special;
