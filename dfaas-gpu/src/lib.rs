//! `dfaas-gpu` will hold the wgpu/WGSL compute kernels: thousands to
//! millions of DFaaS environments stepped in parallel with the same
//! struct-of-arrays layout as `dfaas_core::BatchEnv`, and the small-MLP
//! forward/backward, Dirichlet, GAE and Adam operations the GPU training
//! backend needs. Nothing is implemented yet.
