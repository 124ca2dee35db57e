//! The build step: validation, concrete values drawn from `build_seed`,
//! and the [`BuiltConfig`] the environments are made from.

use super::validate;
use super::{EnvConfig, LinkConfig, NodePerfConfig, PerfModelRegime};
use crate::alloc_prelude::*;
use crate::bandwidth::generate_trace;
use crate::error::ConfigError;
use crate::input_rate::MAX_INPUT_RATE;
use crate::perfmodel::PerfModelParams;
use crate::rejects::RejectArithmetic;
use crate::rng::{inclusive, seeded, truncated_normal, uniform};
use crate::split::MAX_ACTIONS;
use crate::topology::Topology;
use alloc::collections::BTreeMap;

/// `network_links`: per-link parameters keyed by the two endpoints.
type LinkTable = BTreeMap<String, BTreeMap<String, LinkConfig>>;

/// Largest `max_steps` accepted (a bound on per-episode memory).
const MAX_STEPS_LIMIT: i64 = 1 << 20;
/// Largest request input/output size (1 PiB): sizes in bits stay exact in
/// f64 (below 2⁵³).
const MAX_DATA_SIZE_BYTES: u64 = 1 << 50;
/// Draws of a (warm, cold) pair before the ranges are deemed unusable.
const MAX_SERVICE_TIME_DRAWS: usize = 100_000;
/// Largest maximum concurrency (bounds the model's chain).
const MAX_CONCURRENCY_LIMIT: i64 = 100_000;

/// XOR-ed into `build_seed` to seed the stream of `node_ram_gb_range`
/// draws (the bytes of `"node_ram"`): one uniform draw per node, in agent
/// order.
pub const NODE_RAM_STREAM: u64 = u64::from_be_bytes(*b"node_ram");

/// How each episode's input rates are produced (spec §4).
#[derive(Debug, Clone, PartialEq)]
pub enum InputRateMethod {
    /// Phase-shifted noisy sinusoids, randomly permuted, then scale-down.
    SyntheticSinusoidal,
    /// N(61, 32) truncated toward zero and clipped, then scale-down.
    SyntheticNormal,
    /// Two agents: 5 and 100.
    SyntheticConstant,
    /// Two agents: 5, and a line from 1 to 150.
    SyntheticLinearGrowth,
    /// Two agents: two random lines, the second capped.
    SyntheticDoubleLinearGrowth,
    /// Two agents: [5, 100] then [70, 30] from step max_steps/2.
    SyntheticStepChange,
    /// Azure Functions 2019 day files from a folder.
    Real {
        /// The folder.
        dir: String,
    },
    /// The same explicit traces every episode, `[agent][step]`.
    Static(Vec<Vec<u32>>),
}

impl InputRateMethod {
    /// Largest input rate the method can produce, if known before any
    /// episode (`None` for `real`, known once the files are read).
    #[must_use]
    pub fn max_rate(&self) -> Option<u32> {
        match self {
            Self::Static(traces) => Some(traces.iter().flatten().copied().max().unwrap_or(0)),
            Self::Real { .. } => None,
            _ => Some(150),
        }
    }
}

/// One link after the build step.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltLink {
    /// Access delay in milliseconds.
    pub access_delay_ms: f64,
    /// Bandwidth per step in Mbps.
    pub bandwidth_mbps: Vec<f64>,
}

/// A validated configuration with every concrete value: what `Env` and
/// `BatchEnv` are made from. [`BuiltConfig::config`] is its serialisable
/// form; building that again gives an identical `BuiltConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltConfig {
    config: EnvConfig,
    topology: Topology,
    node_params: Vec<PerfModelParams>,
    links: Vec<BuiltLink>,
    input_rate: InputRateMethod,
}

impl BuiltConfig {
    /// The concrete configuration (every drawn value filled in).
    #[must_use]
    pub fn config(&self) -> &EnvConfig {
        &self.config
    }

    /// The topology.
    #[must_use]
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Performance-model parameters per agent, in agent order.
    #[must_use]
    pub fn node_params(&self) -> &[PerfModelParams] {
        &self.node_params
    }

    /// Links in link order.
    #[must_use]
    pub fn links(&self) -> &[BuiltLink] {
        &self.links
    }

    /// Steps per episode.
    #[must_use]
    pub fn max_steps(&self) -> usize {
        self.config.max_steps as usize
    }

    /// The input-rate method.
    #[must_use]
    pub fn input_rate(&self) -> &InputRateMethod {
        &self.input_rate
    }

    /// Request input size in bytes.
    #[must_use]
    pub fn input_size_bytes(&self) -> u64 {
        self.config.request_input_data_size_bytes.unwrap_or(0)
    }

    /// Response size in bytes.
    #[must_use]
    pub fn output_size_bytes(&self) -> u64 {
        self.config.request_output_data_size_bytes.unwrap_or(0)
    }

    /// Arithmetic of the reject distribution.
    #[must_use]
    pub fn reject_arithmetic(&self) -> RejectArithmetic {
        self.config.reject_arithmetic
    }

    /// What the agents' rewards measure.
    #[must_use]
    pub fn reward(&self) -> crate::reward::RewardKind {
        self.config.reward
    }

    /// Whether the env runs in evaluation mode.
    #[must_use]
    pub fn evaluation(&self) -> bool {
        self.config.evaluation
    }
}

/// The values the build stream draws, in the reference's order.
struct Draws {
    input_size: u64,
    output_size: u64,
    memory_mb: u64,
    warm: f64,
    cold: f64,
}

impl EnvConfig {
    /// Validates the configuration and fills in every missing concrete
    /// value from `build_seed`. Generated bandwidth traces use the file at
    /// `bandwidth_base_trace_path` (read only when a trace must be
    /// generated) or, without a path, the flat fallback of
    /// [`crate::bandwidth`].
    ///
    /// # Errors
    /// [`ConfigError`] naming the first invalid field and its value.
    pub fn build(&self) -> Result<BuiltConfig, ConfigError> {
        self.build_inner(None)
    }

    /// As [`EnvConfig::build`], with the base trace for generated bandwidth
    /// given in memory (`bandwidth_base_trace_path` is then not read).
    ///
    /// # Errors
    /// As [`EnvConfig::build`].
    pub fn build_with_base_trace(&self, base_trace: &[f64]) -> Result<BuiltConfig, ConfigError> {
        self.build_inner(Some(base_trace))
    }

    fn build_inner(&self, base_trace: Option<&[f64]>) -> Result<BuiltConfig, ConfigError> {
        self.check_unknown_keys()?;
        let generated;
        let network: &[String] = match &self.network_generator {
            None => &self.network,
            Some(generator) => {
                if self.network != EnvConfig::default().network {
                    return Err(ConfigError::invalid(
                        "network_generator",
                        format!(
                            "{} (and a network of {} lines)",
                            generator.kind(),
                            self.network.len()
                        ),
                        "give either network or network_generator, not both (network must stay at its default with a generator)",
                    ));
                }
                generated = generator.lines()?;
                &generated
            }
        };
        let topology = Topology::from_adjacency_lines(network)?;
        for a in 0..topology.num_agents() {
            if topology.degree(a) + 2 > MAX_ACTIONS {
                return Err(ConfigError::invalid(
                    "network",
                    format!(
                        "{} neighbours of {}",
                        topology.degree(a),
                        topology.names()[a]
                    ),
                    format!("a node may have at most {} neighbours", MAX_ACTIONS - 2),
                ));
            }
        }
        if !(1..=MAX_STEPS_LIMIT).contains(&self.max_steps) {
            return Err(ConfigError::invalid(
                "max_steps",
                self.max_steps,
                format!("must be in 1..={MAX_STEPS_LIMIT}"),
            ));
        }
        let max_steps = self.max_steps as usize;
        let draws = self.draw_concrete_values()?;
        let mut concrete = self.clone();
        if self.network_generator.is_some() {
            concrete.network = network.to_vec();
            concrete.network_generator = None;
        }
        concrete.request_input_data_size_bytes = Some(draws.input_size);
        concrete.request_output_data_size_bytes = Some(draws.output_size);
        concrete.request_memory_mb = Some(draws.memory_mb);
        concrete.warm_service_time = Some(draws.warm);
        concrete.cold_service_time = Some(draws.cold);
        if draws.memory_mb == 0 {
            return Err(ConfigError::invalid("request_memory_mb", 0, "must be > 0"));
        }

        let names = topology.names();
        let node_ram_gb = match &self.node_ram_gb_range {
            None => per_node_table("node_ram_gb", &self.node_ram_gb, names, || 4.0)?,
            Some(range) => self.draw_node_ram(range, names)?,
        };
        for (node, ram) in &node_ram_gb {
            validate::positive(&format!("node_ram_gb.{node}"), *ram)?;
        }
        let perf = per_node_table(
            "perfmodel_params",
            &self.perfmodel_params,
            names,
            NodePerfConfig::default,
        )?;
        let mut node_params = Vec::with_capacity(names.len());
        let mut concrete_perf = BTreeMap::new();
        for name in names {
            let given = &perf[name];
            let field = |key: &str| format!("perfmodel_params.{name}.{key}");
            let warm = validate::positive(
                &field("warm_service_time"),
                given.warm_service_time.unwrap_or(draws.warm),
            )?;
            let cold = validate::positive(
                &field("cold_service_time"),
                given.cold_service_time.unwrap_or(draws.cold),
            )?;
            if cold < warm {
                return Err(ConfigError::invalid(
                    field("cold_service_time"),
                    cold,
                    format!("must be >= warm_service_time ({warm})"),
                ));
            }
            let idle = validate::non_negative(
                &field("idle_time_before_kill"),
                given.idle_time_before_kill,
            )?;
            let derived = libm::floor(node_ram_gb[name] * 1024.0 / draws.memory_mb as f64) as i64;
            let max_conc = given.maximum_concurrency.unwrap_or(derived);
            if !(1..=MAX_CONCURRENCY_LIMIT).contains(&max_conc) {
                return Err(ConfigError::invalid(
                    field("maximum_concurrency"),
                    max_conc,
                    format!(
                        "must be in 1..={MAX_CONCURRENCY_LIMIT} (it is floor(node_ram_gb·1024 / request_memory_mb) when not given)"
                    ),
                ));
            }
            node_params.push(PerfModelParams {
                warm_service_time: warm,
                cold_service_time: cold,
                idle_time_before_kill: idle,
                maximum_concurrency: max_conc as u32,
            });
            concrete_perf.insert(
                name.clone(),
                NodePerfConfig {
                    warm_service_time: Some(warm),
                    cold_service_time: Some(cold),
                    idle_time_before_kill: idle,
                    maximum_concurrency: Some(max_conc),
                    ..NodePerfConfig::default()
                },
            );
        }
        concrete.node_ram_gb = Some(node_ram_gb);
        concrete.node_ram_gb_range = None;
        concrete.perfmodel_params = Some(concrete_perf);

        let (links, concrete_links) = self.build_links(&topology, max_steps, base_trace)?;
        concrete.network_links = Some(concrete_links);
        let input_rate = self.input_rate_method(&topology, max_steps)?;
        Ok(BuiltConfig {
            config: concrete,
            topology,
            node_params,
            links,
            input_rate,
        })
    }

    /// Each node's RAM from `node_ram_gb_range` (see the field's docs).
    fn draw_node_ram(
        &self,
        range: &[f64],
        names: &[String],
    ) -> Result<BTreeMap<String, f64>, ConfigError> {
        if self.node_ram_gb.is_some() {
            return Err(ConfigError::invalid(
                "node_ram_gb_range",
                format!("{range:?}"),
                "give either node_ram_gb or node_ram_gb_range, not both",
            ));
        }
        let (lo, hi) = validate::range("node_ram_gb_range", range, false)?;
        if lo <= 0.0 {
            return Err(ConfigError::invalid(
                "node_ram_gb_range",
                format!("{range:?}"),
                "min must be > 0",
            ));
        }
        let mut rng = seeded(self.build_seed ^ NODE_RAM_STREAM);
        Ok(names
            .iter()
            .map(|name| (name.clone(), uniform(&mut rng, lo, hi)))
            .collect())
    }

    /// Draws (or takes as given) sizes, memory and service times.
    fn draw_concrete_values(&self) -> Result<Draws, ConfigError> {
        let (in_lo, in_hi) = validate::range(
            "request_input_data_size_bytes_range",
            &self.request_input_data_size_bytes_range,
            false,
        )?;
        let (in_mean, in_std) = validate::mean_std(
            "request_input_data_size_bytes_mean_std",
            &self.request_input_data_size_bytes_mean_std,
        )?;
        let (out_lo, out_hi) = validate::range(
            "request_output_data_size_bytes_range",
            &self.request_output_data_size_bytes_range,
            false,
        )?;
        let (out_mean, out_std) = validate::mean_std(
            "request_output_data_size_bytes_mean_std",
            &self.request_output_data_size_bytes_mean_std,
        )?;
        let (mem_lo, mem_hi) = validate::range(
            "request_memory_mb_range",
            &self.request_memory_mb_range,
            true,
        )?;
        let (warm_lo, warm_hi) = validate::range(
            "warm_service_time_range",
            &self.warm_service_time_range,
            true,
        )?;
        let (cold_lo, cold_hi) = validate::range(
            "cold_service_time_range",
            &self.cold_service_time_range,
            true,
        )?;
        if warm_lo > cold_hi {
            return Err(ConfigError::invalid(
                "warm_service_time_range",
                format!("{:?}", self.warm_service_time_range),
                format!(
                    "min must be <= the max of cold_service_time_range ({cold_hi}), or no warm <= cold pair exists"
                ),
            ));
        }
        let mut rng = seeded(self.build_seed);
        let input_size = truncated_normal(&mut rng, in_mean, in_std, in_lo, in_hi) as u64;
        let output_size = truncated_normal(&mut rng, out_mean, out_std, out_lo, out_hi) as u64;
        let memory_mb = inclusive(&mut rng, mem_lo as i64, mem_hi as i64) as u64;
        // Pairs are drawn until warm <= cold (as the reference does), a
        // bounded number of times: ranges that almost never give such a
        // pair are an error, not an endless loop.
        let mut pair = None;
        for _ in 0..MAX_SERVICE_TIME_DRAWS {
            let warm = inclusive(&mut rng, warm_lo as i64, warm_hi as i64);
            let cold = inclusive(&mut rng, cold_lo as i64, cold_hi as i64);
            if warm <= cold {
                pair = Some((warm as f64, cold as f64));
                break;
            }
        }
        let Some((warm, cold)) = pair else {
            return Err(ConfigError::invalid(
                "warm_service_time_range",
                format!("{:?}", self.warm_service_time_range),
                format!(
                    "no warm <= cold pair in {MAX_SERVICE_TIME_DRAWS} draws with cold_service_time_range {:?}; narrow the ranges",
                    self.cold_service_time_range
                ),
            ));
        };
        let unit = match self.perfmodel_regime {
            PerfModelRegime::Reference => 1.0,
            PerfModelRegime::Seconds => 1000.0,
        };
        let warm = match self.warm_service_time {
            Some(v) => validate::positive("warm_service_time", v)?,
            None => warm / unit,
        };
        let cold = match self.cold_service_time {
            Some(v) => validate::positive("cold_service_time", v)?,
            None => cold / unit,
        };
        if cold < warm {
            return Err(ConfigError::invalid(
                "cold_service_time",
                cold,
                format!("must be >= warm_service_time ({warm})"),
            ));
        }
        for (field, given, range_max) in [
            (
                "request_input_data_size_bytes",
                self.request_input_data_size_bytes,
                in_hi,
            ),
            (
                "request_output_data_size_bytes",
                self.request_output_data_size_bytes,
                out_hi,
            ),
        ] {
            if range_max > MAX_DATA_SIZE_BYTES as f64 {
                return Err(ConfigError::invalid(
                    format!("{field}_range"),
                    range_max,
                    format!("max must be <= {MAX_DATA_SIZE_BYTES} bytes"),
                ));
            }
            if let Some(bytes) = given.filter(|&b| b > MAX_DATA_SIZE_BYTES) {
                return Err(ConfigError::invalid(
                    field,
                    bytes,
                    format!("must be <= {MAX_DATA_SIZE_BYTES} bytes"),
                ));
            }
        }
        Ok(Draws {
            input_size: self.request_input_data_size_bytes.unwrap_or(input_size),
            output_size: self.request_output_data_size_bytes.unwrap_or(output_size),
            memory_mb: self.request_memory_mb.unwrap_or(memory_mb),
            warm,
            cold,
        })
    }

    /// Validates every link and produces its trace, in link order.
    fn build_links(
        &self,
        topology: &Topology,
        max_steps: usize,
        base_trace: Option<&[f64]>,
    ) -> Result<(Vec<BuiltLink>, LinkTable), ConfigError> {
        let names = topology.names();
        let given = self.network_links.clone().unwrap_or_else(|| {
            let mut table = LinkTable::new();
            for &(a, b) in topology.links() {
                table
                    .entry(names[a as usize].clone())
                    .or_default()
                    .insert(names[b as usize].clone(), LinkConfig::default());
            }
            table
        });
        // Every entry must name a link of the network, once.
        for (u, row) in &given {
            for v in row.keys() {
                let field = format!("network_links.{u}.{v}");
                let (Some(a), Some(b)) = (topology.index_of(u), topology.index_of(v)) else {
                    let unknown = if topology.index_of(u).is_none() { u } else { v };
                    return Err(ConfigError::invalid(
                        field,
                        unknown,
                        "not a node of the network",
                    ));
                };
                if topology.link_between(a, b).is_none() {
                    return Err(ConfigError::invalid(
                        field,
                        format!("{u} -- {v}"),
                        "not a link of the network",
                    ));
                }
                if given.get(v).is_some_and(|r| r.contains_key(u)) && u < v {
                    return Err(ConfigError::invalid(
                        field,
                        format!("{u} -- {v}"),
                        "link given in both directions",
                    ));
                }
            }
        }
        let mut concrete = given.clone();
        let mut links = Vec::with_capacity(topology.num_links());
        let mut loaded_base: Option<Vec<f64>> = None;
        let mut generated_index: u64 = 0;
        for &(a, b) in topology.links() {
            let (na, nb) = (&names[a as usize], &names[b as usize]);
            let (u, v) = if given.get(na).is_some_and(|r| r.contains_key(nb)) {
                (na, nb)
            } else if given.get(nb).is_some_and(|r| r.contains_key(na)) {
                (nb, na)
            } else {
                return Err(ConfigError::missing(
                    "network_links",
                    format!("link {na} -- {nb}"),
                ));
            };
            let link = &given[u][v];
            let field = |key: &str| format!("network_links.{u}.{v}.{key}");
            let access = validate::non_negative(&field("access_delay_ms"), link.access_delay_ms)?;
            let mean = validate::positive(&field("bandwidth_mbps_mean"), link.bandwidth_mbps_mean)?;
            let noise = link.bandwidth_mbps_random_noise;
            if !(0.0..=1.0).contains(&noise) {
                return Err(ConfigError::invalid(
                    field("bandwidth_mbps_random_noise"),
                    noise,
                    "must be in [0, 1]",
                ));
            }
            let trace = match link.bandwidth_mbps_method.as_str() {
                "static-single" => vec![mean; max_steps],
                "static-trace" => {
                    let Some(trace) = &link.bandwidth_mbps else {
                        return Err(ConfigError::missing(
                            field("bandwidth_mbps"),
                            "the trace of a static-trace link",
                        ));
                    };
                    trace.clone()
                }
                "generated" => {
                    let seed = self.build_seed.wrapping_mul(generated_index + 1);
                    generated_index += 1;
                    match &link.bandwidth_mbps {
                        Some(trace) => trace.clone(),
                        None => {
                            let base = match (base_trace, &loaded_base) {
                                (Some(base), _) => base,
                                (None, Some(base)) => base.as_slice(),
                                (None, None) => {
                                    loaded_base.insert(self.load_base_trace()?).as_slice()
                                }
                            };
                            generate_trace(base, max_steps, mean, noise, seed)
                        }
                    }
                }
                other => {
                    return Err(ConfigError::invalid(
                        field("bandwidth_mbps_method"),
                        other,
                        "must be generated, static-single or static-trace",
                    ));
                }
            };
            validate::trace(
                &field("bandwidth_mbps"),
                &trace,
                max_steps,
                |v| v.is_finite() && *v > 0.0,
                "must be finite and > 0",
            )?;
            if let Some(entry) = concrete.get_mut(u).and_then(|r| r.get_mut(v)) {
                entry.bandwidth_mbps = Some(trace.clone());
            }
            links.push(BuiltLink {
                access_delay_ms: access,
                bandwidth_mbps: trace,
            });
        }
        Ok((links, concrete))
    }

    /// The base trace named by `bandwidth_base_trace_path`, or the fallback.
    fn load_base_trace(&self) -> Result<Vec<f64>, ConfigError> {
        match &self.bandwidth_base_trace_path {
            None => Ok(crate::bandwidth::FALLBACK_BASE_TRACE.to_vec()),
            #[cfg(feature = "std")]
            Some(path) => crate::bandwidth::load_base_trace(std::path::Path::new(path)),
            #[cfg(not(feature = "std"))]
            Some(path) => Err(ConfigError::Io {
                path: path.clone(),
                message: "reading files needs the `std` feature; use build_with_base_trace".into(),
            }),
        }
    }

    fn input_rate_method(
        &self,
        topology: &Topology,
        max_steps: usize,
    ) -> Result<InputRateMethod, ConfigError> {
        let agents = topology.num_agents();
        let two_agents = |method: InputRateMethod| {
            if agents == 2 {
                Ok(method)
            } else {
                Err(ConfigError::invalid(
                    "input_rate_method",
                    &self.input_rate_method,
                    format!("needs exactly 2 agents, the network has {agents}"),
                ))
            }
        };
        match self.input_rate_method.as_str() {
            "synthetic-sinusoidal" => Ok(InputRateMethod::SyntheticSinusoidal),
            "synthetic-normal" => Ok(InputRateMethod::SyntheticNormal),
            "synthetic-constant" => two_agents(InputRateMethod::SyntheticConstant),
            "synthetic-linear-growth" => two_agents(InputRateMethod::SyntheticLinearGrowth),
            "synthetic-double-linear-growth" => {
                two_agents(InputRateMethod::SyntheticDoubleLinearGrowth)
            }
            "synthetic-step-change" => two_agents(InputRateMethod::SyntheticStepChange),
            "real" => {
                if max_steps != 288 {
                    return Err(ConfigError::invalid(
                        "max_steps",
                        max_steps,
                        "must be 288 with input_rate_method real",
                    ));
                }
                let pool = if self.evaluation { 2 } else { 12 };
                if agents > pool {
                    return Err(ConfigError::invalid(
                        "network",
                        format!("{agents} agents"),
                        format!(
                            "input_rate_method real gives every agent its own day file: at most {pool} agents"
                        ),
                    ));
                }
                Ok(InputRateMethod::Real {
                    dir: self
                        .real_traces_dir
                        .clone()
                        .unwrap_or_else(|| "dataset/data".into()),
                })
            }
            "static" => {
                let Some(traces) = &self.input_rate_trace else {
                    return Err(ConfigError::missing(
                        "input_rate_trace",
                        "the traces of input_rate_method static",
                    ));
                };
                let mut per_agent = Vec::with_capacity(agents);
                for name in topology.names() {
                    let Some(trace) = traces.get(name) else {
                        return Err(ConfigError::missing(
                            "input_rate_trace",
                            format!("node '{name}'"),
                        ));
                    };
                    validate::trace(
                        &format!("input_rate_trace.{name}"),
                        trace,
                        max_steps,
                        |v| (0..=i64::from(MAX_INPUT_RATE)).contains(v),
                        &format!("must be in 0..={MAX_INPUT_RATE}"),
                    )?;
                    per_agent.push(trace.iter().map(|&v| v as u32).collect());
                }
                if let Some(extra) = traces.keys().find(|k| topology.index_of(k).is_none()) {
                    return Err(ConfigError::invalid(
                        format!("input_rate_trace.{extra}"),
                        extra,
                        "not a node of the network",
                    ));
                }
                Ok(InputRateMethod::Static(per_agent))
            }
            other => Err(ConfigError::invalid(
                "input_rate_method",
                other,
                "must be one of synthetic-sinusoidal, synthetic-normal, synthetic-constant, synthetic-linear-growth, synthetic-double-linear-growth, synthetic-step-change, real, static",
            )),
        }
    }
}

/// A per-node table: the given one must list exactly the network's nodes;
/// an absent one gets `default()` for every node.
fn per_node_table<T: Clone>(
    field: &str,
    given: &Option<BTreeMap<String, T>>,
    names: &[String],
    default: impl Fn() -> T,
) -> Result<BTreeMap<String, T>, ConfigError> {
    let Some(table) = given else {
        return Ok(names.iter().map(|n| (n.clone(), default())).collect());
    };
    if let Some(name) = names.iter().find(|n| !table.contains_key(*n)) {
        return Err(ConfigError::missing(field, format!("node '{name}'")));
    }
    if let Some(extra) = table.keys().find(|k| !names.contains(k)) {
        return Err(ConfigError::invalid(
            format!("{field}.{extra}"),
            extra,
            "not a node of the network",
        ));
    }
    Ok(table.clone())
}
