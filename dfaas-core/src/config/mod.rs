//! Environment configuration: the reference's keys (its
//! `configs/env/*.yaml` load unchanged), validation with typed errors, and
//! the build step that draws missing concrete values from `build_seed`.
//!
//! Unlike the reference, concrete values given in a configuration are kept
//! (service times, sizes, memory, maximum concurrency, bandwidth traces), so
//! a written-out built configuration builds back to exactly itself. The
//! build stream draws every value in the reference's order (input size,
//! output size, request memory, then (warm, cold) pairs) whether or not it
//! is given, so giving one value does not change the others.
//!
//! Keys this project adds (all optional): `perfmodel_regime`
//! (`seconds`, the default, or `reference`), `reject_arithmetic` (`exact`,
//! the default, or `reference`), `reward` (`reference`, the default, or
//! `served`: [`crate::reward::RewardKind`]), `input_rate_trace` (per-node traces for
//! `input_rate_method: static`), `real_traces_dir` (folder of the Azure
//! day files for `input_rate_method: real`), `network_generator` (a
//! generated topology instead of `network`, see [`generator`]) and
//! `node_ram_gb_range` (per-node RAM drawn from a range). A built
//! configuration holds the generated `network` lines and the drawn
//! `node_ram_gb` table instead of these two, so it builds back to itself.

mod build;
#[cfg(all(test, feature = "yaml", feature = "json"))]
mod generated_tests;
pub mod generator;
mod validate;

pub use build::{BuiltConfig, BuiltLink, InputRateMethod, NODE_RAM_STREAM};
pub use generator::{HubLinks, NetworkGenerator};

use crate::alloc_prelude::*;
use crate::rejects::RejectArithmetic;
use crate::reward::RewardKind;
use alloc::collections::BTreeMap;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Keys not known to the configuration, collected so that they can be
/// reported by name (see [`crate::ConfigError::UnknownKey`]).
#[cfg(feature = "serde")]
pub type UnknownKeys = BTreeMap<String, serde::de::IgnoredAny>;
/// Keys not known to the configuration (empty without `serde`).
#[cfg(not(feature = "serde"))]
pub type UnknownKeys = BTreeMap<String, ()>;

/// Units in which `build()` draws service times (spec §7, "Units").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PerfModelRegime {
    /// Service times drawn in milliseconds and fed to the model as is, with
    /// idle time 30 and the per-step count as arrival rate: the reference's
    /// behaviour, whose model never rejects.
    Reference,
    /// The drawn milliseconds divided by 1000 (seconds): overload is real.
    /// The default.
    #[default]
    Seconds,
}

/// One link's parameters (`network_links.<u>.<v>`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct LinkConfig {
    /// Access delay in milliseconds (>= 0; default 5).
    pub access_delay_ms: f64,
    /// `generated` (default), `static-single` or `static-trace`.
    pub bandwidth_mbps_method: String,
    /// Mean bandwidth in Mbps (> 0; default 100): the value of
    /// `static-single`, the target mean of `generated`.
    pub bandwidth_mbps_mean: f64,
    /// Relative noise of `generated` traces, in [0, 1] (default 0.1).
    pub bandwidth_mbps_random_noise: f64,
    /// Bandwidth per step in Mbps (> 0, `max_steps` values): given for
    /// `static-trace`, filled by the build step otherwise.
    pub bandwidth_mbps: Option<Vec<f64>>,
    /// Keys not recognised when parsing; [`EnvConfig::build`] refuses a
    /// configuration with any (kept so the error can name them).
    #[cfg_attr(feature = "serde", serde(flatten, skip_serializing))]
    pub unknown_keys: UnknownKeys,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            access_delay_ms: 5.0,
            bandwidth_mbps_method: "generated".to_string(),
            bandwidth_mbps_mean: 100.0,
            bandwidth_mbps_random_noise: 0.1,
            bandwidth_mbps: None,
            unknown_keys: UnknownKeys::new(),
        }
    }
}

/// One node's performance-model parameters (`perfmodel_params.<node>`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct NodePerfConfig {
    /// Warm service time (> 0); drawn when absent.
    pub warm_service_time: Option<f64>,
    /// Cold service time (>= warm); drawn when absent.
    pub cold_service_time: Option<f64>,
    /// Idle time before an instance is killed (>= 0; default 30).
    pub idle_time_before_kill: f64,
    /// Maximum concurrency (>= 1); `floor(node_ram_gb·1024 /
    /// request_memory_mb)` when absent.
    pub maximum_concurrency: Option<i64>,
    /// Keys not recognised when parsing; [`EnvConfig::build`] refuses a
    /// configuration with any (kept so the error can name them).
    #[cfg_attr(feature = "serde", serde(flatten, skip_serializing))]
    pub unknown_keys: UnknownKeys,
}

impl Default for NodePerfConfig {
    fn default() -> Self {
        Self {
            warm_service_time: None,
            cold_service_time: None,
            idle_time_before_kill: 30.0,
            maximum_concurrency: None,
            unknown_keys: UnknownKeys::new(),
        }
    }
}

/// The environment configuration: the reference's keys plus this
/// project's optional ones. [`EnvConfig::build`] turns it into a
/// [`BuiltConfig`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct EnvConfig {
    /// Topology as adjacency lines (default `["node_0 node_1"]`).
    pub network: Vec<String>,
    /// A generated topology (`{kind: ring, nodes: 20}`, …; see
    /// [`generator`]) whose lines replace `network` at build time; `network`
    /// must then be left at its default. Absent by default (and never in a
    /// built configuration).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub network_generator: Option<NetworkGenerator>,
    /// Steps per episode (> 0; default 288).
    pub max_steps: i64,
    /// Input-rate generator: `synthetic-sinusoidal` (default),
    /// `synthetic-normal`, `synthetic-constant`, `synthetic-linear-growth`,
    /// `synthetic-double-linear-growth`, `synthetic-step-change`, `real`,
    /// `static`.
    pub input_rate_method: String,
    /// Read only by the reference's training callbacks; kept for
    /// compatibility (default true).
    pub input_rate_same_method: bool,
    /// Evaluation mode: fixed episode-seed cycle and, for `real`, the
    /// evaluation day files (default false).
    pub evaluation: bool,
    /// CSV file whose `Throughput` column (Mbps) is the base of generated
    /// bandwidth traces; without it a flat base trace is used, so generated
    /// values are `mean·(1 + u)`, u uniform in `[−noise, noise)`.
    pub bandwidth_base_trace_path: Option<String>,
    /// Per-link parameters `network_links.<u>.<v>` (one direction per
    /// link); every link gets the defaults when absent.
    pub network_links: Option<BTreeMap<String, BTreeMap<String, LinkConfig>>>,
    /// Range of the request input size in bytes, `[min, max]` (default
    /// `[100, 5242880]`).
    pub request_input_data_size_bytes_range: Vec<f64>,
    /// Mean and standard deviation of the (truncated normal) input size
    /// (default `[1024, 1024]`).
    pub request_input_data_size_bytes_mean_std: Vec<f64>,
    /// Request input size in bytes; drawn when absent.
    pub request_input_data_size_bytes: Option<u64>,
    /// As the input size, for the response.
    pub request_output_data_size_bytes_range: Vec<f64>,
    /// As the input size, for the response.
    pub request_output_data_size_bytes_mean_std: Vec<f64>,
    /// Response size in bytes; drawn when absent.
    pub request_output_data_size_bytes: Option<u64>,
    /// Range of the request memory in MB, integers, inclusive (default
    /// `[128, 1024]`).
    pub request_memory_mb_range: Vec<f64>,
    /// Request memory in MB; drawn when absent.
    pub request_memory_mb: Option<u64>,
    /// Range of the warm service time in milliseconds, integers, inclusive
    /// (default `[100, 500]`).
    pub warm_service_time_range: Vec<f64>,
    /// Range of the cold service time in milliseconds (default `[250, 750]`).
    pub cold_service_time_range: Vec<f64>,
    /// Warm service time shared by all nodes (unit of the regime); drawn
    /// when absent.
    pub warm_service_time: Option<f64>,
    /// Cold service time shared by all nodes; drawn when absent.
    pub cold_service_time: Option<f64>,
    /// RAM per node in GB (> 0; default 4 for every node).
    pub node_ram_gb: Option<BTreeMap<String, f64>>,
    /// `[lo, hi]` in GB (finite, `0 < lo <= hi`): instead of `node_ram_gb`,
    /// each node's RAM is drawn uniformly on `[lo, hi)` at build time (`lo`
    /// when equal), in agent order, from the stream
    /// `seeded(build_seed ^ NODE_RAM_STREAM)` ([`NODE_RAM_STREAM`]; apart
    /// from the stream of the other drawn values, which it leaves
    /// unchanged). The
    /// built configuration records the drawn `node_ram_gb` table instead.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub node_ram_gb_range: Option<Vec<f64>>,
    /// Per-node performance-model parameters (defaults for every node when
    /// absent).
    pub perfmodel_params: Option<BTreeMap<String, NodePerfConfig>>,
    /// Seed of the build step (default 42).
    pub build_seed: u64,
    /// Stored but never read by the environment (as in the reference).
    pub seed: Option<i64>,
    /// Units in which service times are drawn (default `seconds`).
    pub perfmodel_regime: PerfModelRegime,
    /// Arithmetic of the reject distribution (default `exact`).
    pub reject_arithmetic: RejectArithmetic,
    /// What the agents' rewards measure (default `reference`; written out
    /// only when not the default).
    #[cfg_attr(
        feature = "serde",
        serde(skip_serializing_if = "RewardKind::is_reference")
    )]
    pub reward: RewardKind,
    /// Per-node input-rate traces (`max_steps` integers >= 0 each) for
    /// `input_rate_method: static`.
    pub input_rate_trace: Option<BTreeMap<String, Vec<i64>>>,
    /// Folder holding the 14 Azure day files for `input_rate_method: real`
    /// (default `dataset/data`).
    pub real_traces_dir: Option<String>,
    /// Keys not recognised when parsing; [`EnvConfig::build`] refuses a
    /// configuration with any (kept so the error can name them).
    #[cfg_attr(feature = "serde", serde(flatten, skip_serializing))]
    pub unknown_keys: UnknownKeys,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            network: vec!["node_0 node_1".to_string()],
            network_generator: None,
            max_steps: 288,
            input_rate_method: "synthetic-sinusoidal".to_string(),
            input_rate_same_method: true,
            evaluation: false,
            bandwidth_base_trace_path: None,
            network_links: None,
            request_input_data_size_bytes_range: vec![100.0, 5_242_880.0],
            request_input_data_size_bytes_mean_std: vec![1024.0, 1024.0],
            request_input_data_size_bytes: None,
            request_output_data_size_bytes_range: vec![100.0, 5_242_880.0],
            request_output_data_size_bytes_mean_std: vec![1024.0, 1024.0],
            request_output_data_size_bytes: None,
            request_memory_mb_range: vec![128.0, 1024.0],
            request_memory_mb: None,
            warm_service_time_range: vec![100.0, 500.0],
            cold_service_time_range: vec![250.0, 750.0],
            warm_service_time: None,
            cold_service_time: None,
            node_ram_gb: None,
            node_ram_gb_range: None,
            perfmodel_params: None,
            build_seed: 42,
            seed: Some(42),
            perfmodel_regime: PerfModelRegime::default(),
            reject_arithmetic: RejectArithmetic::default(),
            reward: RewardKind::default(),
            input_rate_trace: None,
            real_traces_dir: None,
            unknown_keys: UnknownKeys::new(),
        }
    }
}

impl EnvConfig {
    /// The default configuration with the given topology.
    #[must_use]
    pub fn with_network<S: AsRef<str>>(lines: &[S]) -> Self {
        Self {
            network: lines.iter().map(|l| l.as_ref().to_string()).collect(),
            ..Self::default()
        }
    }

    /// Reads a configuration from YAML (the reference's files load
    /// unchanged; a document with only comments gives the defaults).
    ///
    /// # Errors
    /// [`crate::ConfigError::Parse`] for malformed YAML or a value of the
    /// wrong type, [`crate::ConfigError::UnknownKey`] for an unknown key.
    #[cfg(feature = "yaml")]
    pub fn from_yaml(text: &str) -> Result<Self, crate::ConfigError> {
        let parsed: Option<Self> =
            serde_norway::from_str(text).map_err(|e| crate::ConfigError::Parse {
                format: "yaml",
                message: e.to_string(),
            })?;
        let config = parsed.unwrap_or_default();
        config.check_unknown_keys()?;
        Ok(config)
    }

    /// Writes the configuration as YAML (keys in declaration order; maps
    /// sorted by key).
    ///
    /// # Errors
    /// [`crate::ConfigError::Parse`] if serialisation fails (it does not for
    /// finite numbers).
    #[cfg(feature = "yaml")]
    pub fn to_yaml(&self) -> Result<String, crate::ConfigError> {
        serde_norway::to_string(self).map_err(|e| crate::ConfigError::Parse {
            format: "yaml",
            message: e.to_string(),
        })
    }

    /// Reads a configuration from JSON.
    ///
    /// # Errors
    /// As [`EnvConfig::from_yaml`].
    #[cfg(feature = "json")]
    pub fn from_json(text: &str) -> Result<Self, crate::ConfigError> {
        let config: Self = serde_json::from_str(text).map_err(|e| crate::ConfigError::Parse {
            format: "json",
            message: e.to_string(),
        })?;
        config.check_unknown_keys()?;
        Ok(config)
    }

    /// Writes the configuration as pretty JSON.
    ///
    /// # Errors
    /// [`crate::ConfigError::Parse`] if serialisation fails.
    #[cfg(feature = "json")]
    pub fn to_json(&self) -> Result<String, crate::ConfigError> {
        serde_json::to_string_pretty(self).map_err(|e| crate::ConfigError::Parse {
            format: "json",
            message: e.to_string(),
        })
    }

    /// Reads a configuration file: JSON when the name ends in `.json`, YAML
    /// otherwise.
    ///
    /// # Errors
    /// [`crate::ConfigError::Io`] when the file cannot be read, else as the
    /// parser.
    #[cfg(all(feature = "yaml", feature = "json"))]
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, crate::ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| crate::ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_yaml(&text)
        }
    }

    pub(crate) fn check_unknown_keys(&self) -> Result<(), crate::ConfigError> {
        let unknown = |prefix: &str, keys: &UnknownKeys| {
            keys.keys().next().map(|k| crate::ConfigError::UnknownKey {
                field: if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                },
            })
        };
        if let Some(e) = unknown("", &self.unknown_keys) {
            return Err(e);
        }
        for (u, row) in self.network_links.iter().flatten() {
            for (v, link) in row {
                if let Some(e) = unknown(&format!("network_links.{u}.{v}"), &link.unknown_keys) {
                    return Err(e);
                }
            }
        }
        for (node, params) in self.perfmodel_params.iter().flatten() {
            if let Some(e) = unknown(&format!("perfmodel_params.{node}"), &params.unknown_keys) {
                return Err(e);
            }
        }
        Ok(())
    }
}
