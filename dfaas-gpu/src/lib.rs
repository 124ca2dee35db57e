//! # dfaas-gpu
//!
//! wgpu/WGSL compute kernels for the DFaaS environment, in the same
//! struct-of-arrays layout as `dfaas_core::BatchEnv` so that CPU and GPU
//! agree bit for bit on integer state.
//!
//! Built so far:
//! * [`GpuContext`] — adapter and device selection, a typed error when no
//!   adapter exists, the adapter in use, an id so that kernels and envs
//!   refuse another context than their own ([`GpuError::ContextMismatch`]);
//! * [`split::SplitKernel`] — the split of input rates by actions
//!   (`dfaas_core::split` semantics, f32 products), for any number of rows;
//! * [`GpuBatchEnv`] — the whole environment step for N envs in one kernel,
//!   auto-reset onto a [`TracePool`], with `BatchEnv`'s integer results
//!   for every input rate the CPU env accepts (up to
//!   `dfaas_core::input_rate::MAX_INPUT_RATE`; 64-bit products emulated in
//!   WGSL), and its state read back and restored ([`GpuEnvState`]);
//! * [`nn`] — the numeric operations of a PPO update, each the twin of a
//!   CPU operation of `dfaas-policies` (tested against it there): a
//!   grouped MLP forward and backward, Adam, global-norm
//!   clipping, softplus concentrations, the Dirichlet log-density,
//!   entropy and KL with their gradients, GAE with the standardisation
//!   of advantages, and the PPO loss with its gradients and minibatch
//!   means ([`nn::loss::PpoLoss`]), on [`nn::DeviceVec`] tensors.
//! * [`nn::sampler::DirichletSampler`] — Dirichlet sampling for any number
//!   of rows, each from its own seeded stream on the device (Marsaglia–Tsang
//!   Gamma draws with the α < 1 boost, in log space), the twin in
//!   distribution of `dfaas_policies::dirichlet::sample`.
//!
//! Per-step metrics on the GPU and the GPU trainer are later work.
#![forbid(unsafe_code)]

pub mod batch_env;
mod context;
pub mod nn;
pub mod ppo;
pub mod split;

pub use batch_env::{GpuBatchEnv, GpuEnvState, TracePool};
pub use context::{GpuContext, GpuError, Traffic};
