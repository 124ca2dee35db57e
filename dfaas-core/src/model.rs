//! [`EnvModel`]: everything about an environment that does not change
//! while it runs — topology in CSR form, incoming-list order, per-node
//! performance tables, bandwidth traces — precomputed once from a
//! [`BuiltConfig`] and shared by every env of a batch.

use crate::alloc_prelude::*;
use crate::config::{BuiltConfig, InputRateMethod};
use crate::error::ConfigError;
use crate::input_rate::{RealTraces, Sinusoids};
use crate::perfmodel::PerfTable;
use crate::rejects::RejectArithmetic;

/// The incoming lists of all nodes in CSR form: node `n` receives forwards
/// from `senders[offsets[n]..offsets[n + 1]]` (sorted by agent index), each
/// through entry `action_index[e]` (1..=degree) of the sender's action.
/// That order is the order of the node's incoming list after its own
/// local count (spec §6.4).
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// `num_agents + 1` offsets into `senders` / `action_index`.
    pub offsets: &'a [usize],
    /// Sending agent of each incoming edge.
    pub senders: &'a [usize],
    /// Index of the forward in the sender's action, `1..=degree`.
    pub action_index: &'a [usize],
}

/// Immutable, precomputed description of an environment.
#[derive(Debug, Clone)]
pub struct EnvModel {
    pub(crate) built: BuiltConfig,
    pub(crate) num_agents: usize,
    pub(crate) max_steps: usize,
    /// `2 + max_degree`: entries per agent in the padded action layout.
    pub(crate) action_width: usize,
    /// `2 + 2·max_degree`: entries per agent in the padded observation layout.
    pub(crate) obs_width: usize,
    pub(crate) degrees: Vec<usize>,
    /// Incoming senders of node n: `in_senders[in_offsets[n]..in_offsets[n+1]]`
    /// sorted by agent index, with the index of the forward in the sender's
    /// action (`in_action_index`, 1..=degree).
    pub(crate) in_offsets: Vec<usize>,
    pub(crate) in_senders: Vec<usize>,
    pub(crate) in_action_index: Vec<usize>,
    /// Per-node tables (`tables[table_of[n]]`; nodes with equal parameters
    /// share one).
    pub(crate) tables: Vec<PerfTable>,
    pub(crate) table_of: Vec<usize>,
    pub(crate) sinusoids: Sinusoids,
    pub(crate) real: Option<RealTraces>,
    pub(crate) reject_arithmetic: RejectArithmetic,
    pub(crate) reward: crate::reward::RewardKind,
    /// Largest input rate of an agent (the tables cover `max_rate·(1 +
    /// degree)` at each node).
    pub(crate) max_rate: u32,
    /// Network delays (ms) of each link at each step, `[link][step]`, of
    /// the request (`forward_delays`, input size) and of the response
    /// (`return_delays`, output size): [`crate::network_delay_ms`] of the
    /// link's bandwidth then.
    pub(crate) forward_delays: Vec<f64>,
    pub(crate) return_delays: Vec<f64>,
}

impl EnvModel {
    /// Precomputes the model of `built`: performance tables for every
    /// total a node can receive, and (for `real`) reads the day files.
    ///
    /// # Errors
    /// [`ConfigError`] when the `real` day files cannot be read (or the
    /// `std` feature is off for `real`; use [`EnvModel::with_real_traces`]).
    pub fn new(built: &BuiltConfig) -> Result<Self, ConfigError> {
        let real = match built.input_rate() {
            #[cfg(feature = "std")]
            InputRateMethod::Real { dir } => Some(RealTraces::load(std::path::Path::new(dir))?),
            #[cfg(not(feature = "std"))]
            InputRateMethod::Real { dir } => {
                return Err(ConfigError::Io {
                    path: dir.clone(),
                    message:
                        "reading files needs the `std` feature; use EnvModel::with_real_traces"
                            .into(),
                });
            }
            _ => None,
        };
        Self::with_real_traces(built, real)
    }

    /// As [`EnvModel::new`] with the `real` day files given in memory.
    ///
    /// # Errors
    /// [`ConfigError`] when the method is `real` and no traces are given,
    /// or a node's performance parameters are invalid.
    pub fn with_real_traces(
        built: &BuiltConfig,
        real: Option<RealTraces>,
    ) -> Result<Self, ConfigError> {
        let topology = built.topology();
        let n = topology.num_agents();
        let max_degree = topology.max_degree();
        let max_rate = match (built.input_rate().max_rate(), &real) {
            (Some(rate), _) => rate,
            (None, Some(real)) => real.max_rate(),
            (None, None) => {
                return Err(ConfigError::missing(
                    "real_traces_dir",
                    "the day files of input_rate_method real",
                ));
            }
        };
        let mut in_offsets = vec![0];
        let mut in_senders = Vec::new();
        let mut in_action_index = Vec::new();
        for node in 0..n {
            let mut senders: Vec<usize> = topology
                .neighbours(node)
                .iter()
                .map(|&s| s as usize)
                .collect();
            senders.sort_unstable();
            for s in senders {
                let position = topology
                    .neighbours(s)
                    .iter()
                    .position(|&m| m as usize == node)
                    .unwrap_or(0);
                in_senders.push(s);
                in_action_index.push(1 + position);
            }
            in_offsets.push(in_senders.len());
        }
        let mut tables: Vec<PerfTable> = Vec::new();
        let mut table_of = Vec::with_capacity(n);
        for node in 0..n {
            let params = built.node_params()[node];
            let max_total = max_rate.saturating_mul(1 + topology.degree(node) as u32);
            match tables
                .iter()
                .position(|t| *t.params() == params && t.max_total() >= max_total)
            {
                Some(i) => table_of.push(i),
                None => {
                    let table = PerfTable::new(params, max_total).map_err(|e| {
                        ConfigError::invalid(
                            format!("perfmodel_params.{}.{}", topology.names()[node], e.field),
                            e.value,
                            e.reason,
                        )
                    })?;
                    tables.push(table);
                    table_of.push(tables.len() - 1);
                }
            }
        }
        let delays = |bytes: u64| -> Vec<f64> {
            built
                .links()
                .iter()
                .flat_map(|link| {
                    // Each trace holds `max_steps` values (validated).
                    link.bandwidth_mbps.iter().map(move |&bandwidth| {
                        crate::network_delay_ms(link.access_delay_ms, bytes, bandwidth)
                    })
                })
                .collect()
        };
        Ok(Self {
            forward_delays: delays(built.input_size_bytes()),
            return_delays: delays(built.output_size_bytes()),
            built: built.clone(),
            num_agents: n,
            max_steps: built.max_steps(),
            action_width: 2 + max_degree,
            obs_width: 2 + 2 * max_degree,
            degrees: (0..n).map(|a| topology.degree(a)).collect(),
            in_offsets,
            in_senders,
            in_action_index,
            tables,
            table_of,
            sinusoids: Sinusoids::new(n, built.max_steps()),
            real,
            reject_arithmetic: built.reject_arithmetic(),
            reward: built.reward(),
            max_rate,
        })
    }

    /// The built configuration.
    #[must_use]
    pub fn built(&self) -> &BuiltConfig {
        &self.built
    }

    /// Number of agents.
    #[must_use]
    pub fn num_agents(&self) -> usize {
        self.num_agents
    }

    /// Steps per episode.
    #[must_use]
    pub fn max_steps(&self) -> usize {
        self.max_steps
    }

    /// Entries per agent in the padded action layout: `2 + max_degree`.
    /// Agent `a` with `k` neighbours reads `[local, forward_1..k, reject]`
    /// from the first `k + 2` entries; the rest is padding and ignored.
    #[must_use]
    pub fn action_width(&self) -> usize {
        self.action_width
    }

    /// Entries per agent in the padded observation layout:
    /// `[input_rate, prev_input_rate, prev_forward_to_1..k,
    /// prev_forward_rejects_to_1..k]` in the first `2 + 2k` entries, zeros
    /// after (neighbours in neighbour order).
    #[must_use]
    pub fn obs_width(&self) -> usize {
        self.obs_width
    }

    /// Largest input rate an agent can receive (the performance tables
    /// cover every total up to `max_input_rate·(1 + degree)` at each node).
    #[must_use]
    pub fn max_input_rate(&self) -> u32 {
        self.max_rate
    }

    /// Number of neighbours of agent `a`.
    #[must_use]
    pub fn degree(&self, a: usize) -> usize {
        self.degrees[a]
    }

    /// Generates the input rates of the episode with seed `episode_seed`
    /// into `out` (`[agent][step]`), exactly as a [`crate::BatchEnv`] does at
    /// reset.
    ///
    /// # Errors
    /// As [`crate::input_rate::generate`].
    pub fn generate_episode(
        &self,
        episode_seed: u32,
        out: &mut [u32],
    ) -> Result<(), crate::ResetError> {
        let inputs = crate::input_rate::GeneratorInputs {
            method: self.built.input_rate(),
            num_agents: self.num_agents,
            max_steps: self.max_steps,
            sinusoids: &self.sinusoids,
            real: self.real.as_ref(),
            evaluation: self.built.evaluation(),
            agent_names: self.built.topology().names(),
        };
        let mut rng = crate::rng::seeded(u64::from(episode_seed));
        crate::input_rate::generate(&inputs, &mut rng, out)
    }

    /// The incoming lists of every node in CSR form (built once here; the
    /// GPU env uploads them as they are).
    #[must_use]
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            offsets: &self.in_offsets,
            senders: &self.in_senders,
            action_index: &self.in_action_index,
        }
    }

    /// The performance table of node `n`.
    #[must_use]
    pub fn perf_table(&self, n: usize) -> &PerfTable {
        &self.tables[self.table_of[n]]
    }
}
