//! # dfaas-gpu
//!
//! wgpu/WGSL compute kernels for the DFaaS environment, in the same
//! struct-of-arrays layout as `dfaas_core::BatchEnv` so that CPU and GPU
//! agree bit for bit on integer state.
//!
//! Built so far:
//! * [`GpuContext`] — adapter and device selection, a typed error when no
//!   adapter exists, the adapter in use;
//! * [`split::SplitKernel`] — the split of input rates by actions
//!   (`dfaas_core::split` semantics, f32 products), for any number of rows;
//! * [`GpuBatchEnv`] — the whole environment step for N envs in one kernel,
//!   auto-reset onto a [`TracePool`], with `BatchEnv`'s integer results.
//!
//! Per-step metrics on the GPU and the training operations are later work.
#![forbid(unsafe_code)]

pub mod batch_env;
mod context;
pub mod split;

pub use batch_env::{GpuBatchEnv, TracePool};
pub use context::{GpuContext, GpuError};
