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
//!   (`dfaas_core::split` semantics, f32 products), for any number of rows.
//!
//! The batched environment step and the training operations are later work.
#![forbid(unsafe_code)]

mod context;
pub mod split;

pub use context::{GpuContext, GpuError};
