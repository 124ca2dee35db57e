//! # dfaas-core
//!
//! The deterministic DFaaS environment: a federation of edge nodes, each an
//! agent that splits its incoming serverless requests every step into
//! local / forward-to-each-neighbour / reject, while a serverless queueing
//! model decides what overloaded nodes reject.
//!
//! The main types, in the order data flows through them:
//! * [`EnvConfig`] — the configuration (the reference's YAML keys; JSON
//!   too), [`EnvConfig::build`] → [`BuiltConfig`] with every concrete value;
//! * [`EnvModel`] — the immutable, precomputed part: topology ([`Topology`],
//!   CSR), per-node performance tables ([`PerfTable`], from
//!   [`perfmodel::evaluate`]), bandwidth traces;
//! * [`Env`] — one environment with per-step metrics ([`StepMetrics`]);
//! * [`BatchEnv`] — N environments in one struct-of-arrays layout with
//!   auto-reset, the same results as N [`Env`]s, and their per-step
//!   metrics ([`BatchMetrics`]).
//!
//! ```
//! use dfaas_core::{BatchEnv, EnvConfig, EnvModel};
//! let built = EnvConfig::default().build()?;          // 2 agents, seconds regime
//! let model = EnvModel::new(&built)?;
//! let mut batch = BatchEnv::new(model, 64)?;
//! batch.reset(42)?;
//! let actions = vec![1.0 / 3.0; 64 * 2 * batch.model().action_width()];
//! batch.step(&actions)?;
//! assert_eq!(batch.rewards().len(), 64 * 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Where the reference is reproduced exactly and where it is deliberately
//! fixed is documented on each module: [`split`] (actions off the simplex),
//! [`rejects`] (f64 vs exact arithmetic), [`perfmodel`] (inputs where the
//! reference crashes), [`bandwidth`] (0 Mbps), [`config`] (kept concrete
//! values, link validation).
//!
//! ## Features
//! * `std` (default): reading files (base trace, Azure day files), atomic
//!   file output. Without it the crate is `no_std` + `alloc` (the error
//!   types implement `core::error::Error` either way).
//! * `serde`: `Serialize`/`Deserialize` on the configuration.
//! * `serde-state` (implies `std`, `serde`): `Serialize`/`Deserialize` on
//!   [`BatchEnvState`], for checkpoints.
//! * `yaml` (default; implies `std`, `serde`), `json` (default; works
//!   without `std`): `EnvConfig::{from,to}_{yaml,json}`.
#![no_std]
#![forbid(unsafe_code)]
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

pub mod bandwidth;
pub mod batch;
mod batch_metrics;
pub mod config;
mod env;
mod error;
pub mod input_rate;
#[cfg(feature = "std")]
pub mod io;
mod lanes;
mod metrics;
mod model;
pub mod perfmodel;
pub mod rejects;
#[cfg(all(feature = "yaml", feature = "json"))]
pub mod replay;
pub mod resolve;
pub mod reward;
pub mod rng;
pub mod split;
#[cfg(feature = "std")]
pub mod stats;
mod topology;

pub use batch::{BatchEnv, BatchEnvState};
pub use batch_metrics::BatchMetrics;
pub use config::{
    BuiltConfig, EnvConfig, InputRateMethod, LinkConfig, NetworkGenerator, NodePerfConfig,
    PerfModelRegime,
};
pub use env::{Env, StepOutcome};
pub use error::{ConfigError, ResetError, StepError};
pub use metrics::{StepMetrics, network_delay_ms};
pub use model::{EnvModel, Incoming};
pub use perfmodel::{PerfModelParams, PerfTable};
pub use rejects::RejectArithmetic;
pub use topology::Topology;
