//! [`Policy`]: a trained checkpoint's actors, loaded for inference.

use crate::agnostic::{ENTRY_WIDTH, GOSSIP_ROW_WIDTH, gossip_len};
use crate::alloc_prelude::{String, ToString, Vec, format, vec};
use crate::error::{ActError, LoadError};
use crate::metadata::{
    AgentMetadata, CONCENTRATION, InferenceMetadata, METADATA_KEY, METADATA_VERSION,
    actor_tensor_name, norm_mean_name, norm_var_name,
};
use crate::mlp::{Accumulation, Activation, Dense, param_count};
use rand_core::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};
use rand_xoshiro::Xoshiro128PlusPlus;
use safetensors::tensor::{Dtype, SafeTensors};

/// Floor added to the concentrations (the trainer's
/// `CONCENTRATION_EPSILON`).
pub const CONCENTRATION_EPSILON: f32 = 1e-7;

/// Most action entries of one agent (`2 + degree`; the env's
/// `MAX_ACTIONS`).
pub const MAX_ENTRIES: usize = 64;

/// Smallest standard deviation the normaliser divides by.
const STD_FLOOR: f64 = 1e-4;

/// Normalised inputs are clamped to `±NORM_CLIP`.
const NORM_CLIP: f64 = 10.0;

/// Which agents share which actor (the trainer's layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One actor per agent, input its own `2 + 2k` observation values.
    Independent,
    /// One actor for all agents: input the padded observation
    /// (`2 + 2·max_degree`) and a one-hot agent id; agent `a` reads outputs
    /// `[0..=k, last]`.
    Shared,
    /// One actor per agent as [`Layout::Independent`] (its centralised
    /// critic is not needed to act).
    Mappo,
    /// One actor for any node: it scores each entry of the action from
    /// that entry's row of [`crate::agnostic::entry_rows`] (input
    /// [`ENTRY_WIDTH`], output 1) or, trained with gossip
    /// ([`Policy::gossip`]), of [`crate::agnostic::gossip_rows`] (input
    /// [`GOSSIP_ROW_WIDTH`]), so it acts for a node with any number of
    /// neighbours ([`Policy::act_node`]), not only the training ones.
    Agnostic,
}

impl Layout {
    /// The layout's name as the trainer writes it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Independent => "independent",
            Self::Shared => "shared",
            Self::Mappo => "mappo",
            Self::Agnostic => "agnostic",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "independent" => Some(Self::Independent),
            "shared" => Some(Self::Shared),
            "mappo" => Some(Self::Mappo),
            "agnostic" => Some(Self::Agnostic),
            _ => None,
        }
    }
}

/// One agent of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Its node name.
    pub name: String,
    /// Its neighbours' node names, in the order of its forward entries.
    pub neighbours: Vec<String>,
    policy: usize,
    /// Outputs of its actor forming its Dirichlet, `[local, forward.., reject]`.
    entries: Vec<usize>,
}

impl Agent {
    /// Number of neighbours `k`.
    #[must_use]
    pub fn degree(&self) -> usize {
        self.neighbours.len()
    }

    /// Its action length, `2 + k`: `[local, forward_1..k, reject]`.
    #[must_use]
    pub fn action_len(&self) -> usize {
        2 + self.neighbours.len()
    }

    /// Its own observation length, `2 + 2k`: `[input_rate,
    /// prev_input_rate, prev_forward_to_1..k, prev_forward_rejects_to_1..k]`.
    #[must_use]
    pub fn observation_len(&self) -> usize {
        2 + 2 * self.neighbours.len()
    }
}

/// One actor and its input normaliser.
#[derive(Debug, Clone)]
struct Actor {
    widths: Vec<usize>,
    params: Vec<f32>,
    /// `(mean, max(√var, 1e-4))` per input, when normalised.
    norm: Option<(Vec<f64>, Vec<f64>)>,
}

/// Buffers of one action, allocated at load.
#[derive(Debug, Clone)]
struct Scratch {
    input: Vec<f32>,
    /// An agent's entry rows (the agnostic layout; empty otherwise).
    rows: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    alpha: [f32; MAX_ENTRIES],
}

/// A trained policy for inference: every agent's actor, its normaliser and
/// the topology it was trained on. Loading allocates; [`Policy::act`] and
/// [`Policy::act_explore`] do not.
#[derive(Debug, Clone)]
pub struct Policy {
    layout: Layout,
    /// Whether the agnostic actor reads gossip rows.
    gossip: bool,
    /// Added to each agent's local output before softplus.
    local_bias: f32,
    activation: Activation,
    accumulation: Accumulation,
    max_input_rate: u32,
    obs_width: usize,
    agents: Vec<Agent>,
    actors: Vec<Actor>,
    scratch: Scratch,
}

fn metadata_error(field: String, got: impl ToString, expected: &'static str) -> LoadError {
    LoadError::Metadata {
        field,
        got: got.to_string(),
        expected,
    }
}

/// The values of tensor `name` as `dtype` (F32 or F64) with `shape`.
fn read_tensor<T: Copy>(
    tensors: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    decode: fn(&[u8]) -> T,
) -> Result<Vec<T>, LoadError> {
    let view = tensors
        .tensor(name)
        .map_err(|_| LoadError::MissingTensor { name: name.into() })?;
    if view.dtype() != dtype {
        return Err(LoadError::TensorDtype {
            name: name.into(),
            expected: if dtype == Dtype::F64 { "F64" } else { "F32" },
            got: format!("{:?}", view.dtype()),
        });
    }
    if view.shape() != shape {
        return Err(LoadError::TensorShape {
            name: name.into(),
            expected: shape.to_vec(),
            got: view.shape().to_vec(),
        });
    }
    Ok(view
        .data()
        .chunks_exact(dtype.bitsize() / 8)
        .map(decode)
        .collect())
}

fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn f64_le(b: &[u8]) -> f64 {
    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn sqrt(x: f64) -> f64 {
    #[cfg(feature = "std")]
    {
        x.sqrt()
    }
    #[cfg(not(feature = "std"))]
    {
        libm::sqrt(x)
    }
}

/// `softplus(x) = ln(1 + eˣ)` (`x` itself above 20), as the trainer.
fn softplus(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        if x > 20.0 { x } else { x.exp().ln_1p() }
    }
    #[cfg(not(feature = "std"))]
    {
        if x > 20.0 {
            x
        } else {
            libm::log1pf(libm::expf(x))
        }
    }
}

/// The metadata's agents checked: unique non-empty names, neighbours that
/// are other agents, each at most once, at most `MAX_ENTRIES − 2` (in
/// `O(n log n)` comparisons, whatever the file holds).
fn check_agents(agents: &[AgentMetadata]) -> Result<(), LoadError> {
    use alloc::collections::BTreeSet;
    if agents.is_empty() {
        return Err(metadata_error("agents".into(), "[]", "at least one agent"));
    }
    let mut names = BTreeSet::new();
    for (a, agent) in agents.iter().enumerate() {
        if agent.name.is_empty() {
            return Err(metadata_error(
                format!("agents[{a}].name"),
                "\"\"",
                "a non-empty name",
            ));
        }
        if !names.insert(agent.name.as_str()) {
            return Err(metadata_error(
                format!("agents[{a}].name"),
                &agent.name,
                "unique among the agents",
            ));
        }
    }
    for (a, agent) in agents.iter().enumerate() {
        if agent.neighbours.len() > MAX_ENTRIES - 2 {
            return Err(metadata_error(
                format!("agents[{a}].neighbours"),
                format!("{} neighbours", agent.neighbours.len()),
                "at most 62 neighbours",
            ));
        }
        let mut seen = BTreeSet::new();
        for (j, n) in agent.neighbours.iter().enumerate() {
            let known = names.contains(n.as_str()) && n != &agent.name;
            if !known || !seen.insert(n.as_str()) {
                return Err(metadata_error(
                    format!("agents[{a}].neighbours[{j}]"),
                    n,
                    "another agent's name, listed once",
                ));
            }
        }
    }
    Ok(())
}

impl Policy {
    /// Loads the actors of a `train_ppo` checkpoint's `policies.safetensors`
    /// (its bytes), with the accumulation of the trainer on this machine
    /// ([`Accumulation::matching_trainer`]).
    ///
    /// # Errors
    /// [`LoadError`]: bytes that are not safetensors, a checkpoint without
    /// inference metadata ([`LoadError::MissingMetadata`]: written before
    /// it existed), metadata or tensors that do not fit each other, named.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, LoadError> {
        let (_, header) = SafeTensors::read_metadata(bytes)?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or(LoadError::MissingMetadata { key: METADATA_KEY })?;
        let meta: InferenceMetadata =
            serde_json::from_str(json).map_err(|e| LoadError::MetadataJson {
                key: METADATA_KEY,
                message: e.to_string(),
            })?;
        let tensors = SafeTensors::deserialize(bytes)?;
        Self::from_parts(&meta, &tensors)
    }

    fn from_parts(meta: &InferenceMetadata, tensors: &SafeTensors<'_>) -> Result<Self, LoadError> {
        if meta.version != METADATA_VERSION {
            return Err(metadata_error(
                "version".into(),
                meta.version,
                "1 (this crate's version)",
            ));
        }
        let layout = Layout::from_name(&meta.layout).ok_or_else(|| {
            metadata_error(
                "layout".into(),
                &meta.layout,
                "independent, shared, mappo or agnostic",
            )
        })?;
        if !meta.local_bias.is_finite() {
            return Err(metadata_error(
                "local_bias".into(),
                meta.local_bias,
                "a finite number",
            ));
        }
        if meta.gossip && layout != Layout::Agnostic {
            return Err(metadata_error(
                "gossip".into(),
                "true",
                "false unless the layout is agnostic",
            ));
        }
        let row_width = if meta.gossip {
            GOSSIP_ROW_WIDTH
        } else {
            ENTRY_WIDTH
        };
        let activation = Activation::from_name(&meta.activation)
            .ok_or_else(|| metadata_error("activation".into(), &meta.activation, "tanh or relu"))?;
        if meta.concentration != CONCENTRATION {
            return Err(metadata_error(
                "concentration".into(),
                &meta.concentration,
                "softplus+1e-7",
            ));
        }
        if meta.max_input_rate == 0 {
            return Err(metadata_error("max_input_rate".into(), 0, ">= 1"));
        }
        check_agents(&meta.agents)?;
        let n = meta.agents.len();
        let max_degree = meta
            .agents
            .iter()
            .map(|a| a.neighbours.len())
            .max()
            .unwrap_or(0);
        let obs_width = 2 + 2 * max_degree;
        // (input width, output width) of each policy's actor, and each
        // agent's policy and entries.
        let (shapes, agents): (Vec<(usize, usize)>, Vec<Agent>) = match layout {
            Layout::Independent | Layout::Mappo => (
                meta.agents
                    .iter()
                    .map(|a| (2 + 2 * a.neighbours.len(), 2 + a.neighbours.len()))
                    .collect(),
                meta.agents
                    .iter()
                    .enumerate()
                    .map(|(p, a)| Agent {
                        name: a.name.clone(),
                        neighbours: a.neighbours.clone(),
                        policy: p,
                        entries: (0..2 + a.neighbours.len()).collect(),
                    })
                    .collect(),
            ),
            Layout::Agnostic => (
                vec![(row_width, 1)],
                meta.agents
                    .iter()
                    .map(|a| Agent {
                        name: a.name.clone(),
                        neighbours: a.neighbours.clone(),
                        policy: 0,
                        entries: (0..2 + a.neighbours.len()).collect(),
                    })
                    .collect(),
            ),
            Layout::Shared => (
                vec![(obs_width + n, 2 + max_degree)],
                meta.agents
                    .iter()
                    .map(|a| Agent {
                        name: a.name.clone(),
                        neighbours: a.neighbours.clone(),
                        policy: 0,
                        entries: (0..=a.neighbours.len()).chain([1 + max_degree]).collect(),
                    })
                    .collect(),
            ),
        };
        let mut actors = Vec::with_capacity(shapes.len());
        for (p, &(input, output)) in shapes.iter().enumerate() {
            actors.push(read_actor(
                tensors,
                p,
                input,
                output,
                activation,
                meta.normalize_observations,
            )?);
        }
        let widest = actors
            .iter()
            .flat_map(|a| a.widths.iter().copied())
            .max()
            .unwrap_or(0);
        let max_input = shapes.iter().map(|s| s.0).max().unwrap_or(0);
        Ok(Self {
            layout,
            gossip: meta.gossip,
            local_bias: meta.local_bias,
            activation,
            accumulation: Accumulation::matching_trainer(),
            max_input_rate: meta.max_input_rate,
            obs_width,
            agents,
            actors,
            scratch: Scratch {
                input: vec![0.0; max_input],
                rows: if layout == Layout::Agnostic {
                    vec![0.0; MAX_ENTRIES * row_width]
                } else {
                    Vec::new()
                },
                a: vec![0.0; widest],
                b: vec![0.0; widest],
                alpha: [0.0; MAX_ENTRIES],
            },
        })
    }

    /// The same policy computing with `accumulation` (to match a trainer
    /// on another machine).
    #[must_use]
    pub fn with_accumulation(mut self, accumulation: Accumulation) -> Self {
        self.accumulation = accumulation;
        self
    }

    /// The accumulation of its dot products.
    #[must_use]
    pub fn accumulation(&self) -> Accumulation {
        self.accumulation
    }

    /// The agents, in agent order.
    #[must_use]
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// The index of the agent named `name`.
    #[must_use]
    pub fn agent_index(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.name == name)
    }

    /// The layout it was trained with.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether it was trained with gossip: then it acts only through
    /// [`Policy::act_node`] given each node's gossip
    /// ([`crate::agnostic::gossip_rows`]).
    #[must_use]
    pub fn gossip(&self) -> bool {
        self.gossip
    }

    /// The hidden activation.
    #[must_use]
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Largest input rate an agent could receive in training (requests per
    /// step).
    #[must_use]
    pub fn max_input_rate(&self) -> u32 {
        self.max_input_rate
    }

    /// The padded observation length, `2 + 2·max_degree`.
    #[must_use]
    pub fn obs_width(&self) -> usize {
        self.obs_width
    }

    /// The deterministic action of `agent` (the Dirichlet mean) for its
    /// `observation` in environment units (requests per step, as `Env`
    /// gives it: its own `2 + 2k` values, or the padded row), written into
    /// `action` (`2 + k`: `[local, forward_1..k, reject]`, summing to 1
    /// within rounding). Allocates nothing.
    ///
    /// # Errors
    /// [`ActError`] for an unknown agent, lengths that do not fit, a
    /// non-finite observation value, a policy trained with gossip
    /// ([`ActError::GossipLength`]: it acts through [`Policy::act_node`]
    /// only) (nothing written).
    pub fn act(
        &mut self,
        agent: usize,
        observation: &[f32],
        action: &mut [f32],
    ) -> Result<(), ActError> {
        let k = self.concentrations(agent, observation, action.len())?;
        mean_of(&self.scratch.alpha[..k], action);
        Ok(())
    }

    /// A sampled action of `agent` (Dirichlet with the actor's
    /// concentrations) drawn from `rng`, otherwise as [`Policy::act`].
    /// Allocates nothing.
    ///
    /// # Errors
    /// As [`Policy::act`].
    pub fn act_explore<R: Rng + ?Sized>(
        &mut self,
        agent: usize,
        observation: &[f32],
        rng: &mut R,
        action: &mut [f32],
    ) -> Result<(), ActError> {
        let k = self.concentrations(agent, observation, action.len())?;
        sample_of(&self.scratch.alpha[..k], rng, action);
        Ok(())
    }

    /// The deterministic action (the Dirichlet mean) of a node with any
    /// number `k` of neighbours for its `observation` (`2 + 2k` values:
    /// `[input_rate, prev_input_rate, prev_forward_to_1..k,
    /// prev_forward_rejects_to_1..k]`, requests per step) into `action`
    /// (`2 + k`: `[local, forward_1..k, reject]`). A policy trained with
    /// [`Policy::gossip`] needs the node's `gossip` (`1 + 3k` values,
    /// [`crate::agnostic::gossip_rows`]); one trained without takes
    /// `None`. Only for a policy of [`Layout::Agnostic`]; allocates
    /// nothing.
    ///
    /// # Errors
    /// [`ActError::NotAgnostic`] for another layout;
    /// [`ActError::NodeLengths`] when `action` is not 2..=[`MAX_ENTRIES`]
    /// long or `observation` is not `2 + 2k` for it;
    /// [`ActError::GossipLength`] for gossip that does not fit the policy
    /// and `k`; [`ActError::ObservationValue`] and
    /// [`ActError::GossipValue`] for a non-finite value (nothing written).
    pub fn act_node(
        &mut self,
        observation: &[f32],
        gossip: Option<&[f32]>,
        action: &mut [f32],
    ) -> Result<(), ActError> {
        let k = self.node_concentrations(observation, gossip, action.len())?;
        mean_of(&self.scratch.alpha[..k], action);
        Ok(())
    }

    /// A sampled action of a node with any number of neighbours, drawn
    /// from `rng`, otherwise as [`Policy::act_node`].
    ///
    /// # Errors
    /// As [`Policy::act_node`].
    pub fn act_node_explore<R: Rng + ?Sized>(
        &mut self,
        observation: &[f32],
        gossip: Option<&[f32]>,
        rng: &mut R,
        action: &mut [f32],
    ) -> Result<(), ActError> {
        let k = self.node_concentrations(observation, gossip, action.len())?;
        sample_of(&self.scratch.alpha[..k], rng, action);
        Ok(())
    }

    /// Checks a node's lengths and values for [`Policy::act_node`], then
    /// fills `scratch.alpha[..action_len]`; returns `action_len`.
    fn node_concentrations(
        &mut self,
        observation: &[f32],
        gossip: Option<&[f32]>,
        action_len: usize,
    ) -> Result<usize, ActError> {
        if self.layout != Layout::Agnostic {
            return Err(ActError::NotAgnostic {
                layout: self.layout.name(),
            });
        }
        if !(2..=MAX_ENTRIES).contains(&action_len) || observation.len() != 2 * action_len - 2 {
            return Err(ActError::NodeLengths {
                observation: observation.len(),
                action: action_len,
            });
        }
        if let Some((index, &value)) = observation.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(ActError::ObservationValue { index, value });
        }
        self.agnostic_concentrations(observation, gossip)?;
        Ok(action_len)
    }

    /// `scratch.alpha[..2 + k]` of the agnostic actor for a node's own
    /// observation (`2 + 2k` finite values, checked by the caller) and its
    /// gossip (checked here against the policy).
    fn agnostic_concentrations(
        &mut self,
        observation: &[f32],
        gossip: Option<&[f32]>,
    ) -> Result<(), ActError> {
        let entries = observation.len() / 2 + 1;
        let expected = if self.gossip {
            gossip_len(entries - 2)
        } else {
            0
        };
        let given = gossip.map_or(0, <[f32]>::len);
        if gossip.is_some() != self.gossip || given != expected {
            return Err(ActError::GossipLength {
                expected,
                got: given,
            });
        }
        let width = if let Some(gossip) = gossip {
            if let Some((index, &value)) = gossip.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ActError::GossipValue { index, value });
            }
            let rows = &mut self.scratch.rows[..entries * GOSSIP_ROW_WIDTH];
            crate::agnostic::gossip_rows(observation, gossip, rows)?;
            GOSSIP_ROW_WIDTH
        } else {
            let rows = &mut self.scratch.rows[..entries * ENTRY_WIDTH];
            crate::agnostic::entry_rows(observation, rows)?;
            ENTRY_WIDTH
        };
        let rows = &mut self.scratch.rows[..entries * width];
        let actor = &self.actors[0];
        let net = Dense::new(&actor.widths, &actor.params, self.activation)?;
        for (i, (row, alpha)) in rows
            .chunks_exact_mut(width)
            .zip(&mut self.scratch.alpha)
            .enumerate()
        {
            if let Some((mean, std)) = &actor.norm {
                normalise(row, mean, std);
            }
            let out = net.forward_row(
                row,
                self.accumulation,
                &mut self.scratch.a,
                &mut self.scratch.b,
            )?;
            let bias = if i == 0 { self.local_bias } else { 0.0 };
            *alpha = softplus(out[0] + bias) + CONCENTRATION_EPSILON;
        }
        Ok(())
    }
}

/// The Dirichlet mean of concentrations `alpha` into `action`.
fn mean_of(alpha: &[f32], action: &mut [f32]) {
    let total: f32 = alpha.iter().sum();
    for (o, &a) in action.iter_mut().zip(alpha) {
        *o = a / total;
    }
}

/// Normalises `row` in place as the trainer does:
/// `clamp((x − mean) / std, −10, 10)` in f64.
fn normalise(row: &mut [f32], mean: &[f64], std: &[f64]) {
    for ((x, m), s) in row.iter_mut().zip(mean).zip(std) {
        *x = ((f64::from(*x) - m) / s).clamp(-NORM_CLIP, NORM_CLIP) as f32;
    }
}

/// A Dirichlet sample with concentrations `alpha` drawn from `rng` into
/// `action` (all mass on the largest concentration if every Gamma draw
/// underflows).
fn sample_of<R: Rng + ?Sized>(alpha: &[f32], rng: &mut R, action: &mut [f32]) {
    let k = alpha.len();
    let mut draws = [0f64; MAX_ENTRIES];
    let draws = &mut draws[..k];
    for (d, &a) in draws.iter_mut().zip(alpha) {
        *d = Gamma::new(f64::from(a), 1.0).map_or(0.0, |g| g.sample(rng));
    }
    let total: f64 = draws.iter().sum();
    if total > 0.0 && total.is_finite() {
        for (o, d) in action.iter_mut().zip(draws.iter()) {
            *o = (d / total) as f32;
        }
    } else {
        // Every draw underflowed: the mass goes to the largest
        // concentration.
        let best = (0..k)
            .max_by(|&i, &j| alpha[i].total_cmp(&alpha[j]))
            .unwrap_or(0);
        for (i, o) in action.iter_mut().enumerate() {
            *o = if i == best { 1.0 } else { 0.0 };
        }
    }
}

impl Policy {
    /// Fills `scratch.alpha[..2 + k]` with `agent`'s concentrations;
    /// returns `2 + k`.
    fn concentrations(
        &mut self,
        agent: usize,
        observation: &[f32],
        action_len: usize,
    ) -> Result<usize, ActError> {
        let info = self.agents.get(agent).ok_or(ActError::UnknownAgent {
            agent,
            agents: self.agents.len(),
        })?;
        let own = info.observation_len();
        if observation.len() != own && observation.len() != self.obs_width {
            return Err(ActError::ObservationLength {
                agent,
                own,
                padded: self.obs_width,
                got: observation.len(),
            });
        }
        if action_len != info.action_len() {
            return Err(ActError::ActionLength {
                agent,
                expected: info.action_len(),
                got: action_len,
            });
        }
        if let Some((index, &value)) = observation.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(ActError::ObservationValue { index, value });
        }
        if self.layout == Layout::Agnostic {
            let k = info.entries.len();
            self.agnostic_concentrations(&observation[..own], None)?;
            return Ok(k);
        }
        let actor = &self.actors[info.policy];
        let input = &mut self.scratch.input[..actor.widths[0]];
        input.fill(0.0);
        // The agent's own values; in the shared layout, padded with zeros
        // (as the environment pads) and followed by the one-hot agent id.
        input[..own].copy_from_slice(&observation[..own]);
        if self.layout == Layout::Shared {
            input[self.obs_width + agent] = 1.0;
        }
        if let Some((mean, std)) = &actor.norm {
            normalise(input, mean, std);
        }
        // Shapes were checked at load: these do not fail.
        let net = Dense::new(&actor.widths, &actor.params, self.activation)?;
        let out = net.forward_row(
            input,
            self.accumulation,
            &mut self.scratch.a,
            &mut self.scratch.b,
        )?;
        let k = info.entries.len();
        for (i, (alpha, &j)) in self.scratch.alpha.iter_mut().zip(&info.entries).enumerate() {
            let bias = if i == 0 { self.local_bias } else { 0.0 };
            *alpha = softplus(out[j] + bias) + CONCENTRATION_EPSILON;
        }
        Ok(k)
    }
}

/// The random stream of exploring request `counter` of a server seeded
/// `seed`: Xoshiro128++ from the SplitMix64 images of both (distinct
/// `(seed, counter)` pairs give distinct streams).
#[must_use]
pub fn explore_stream(seed: u64, counter: u64) -> Xoshiro128PlusPlus {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix64(seed).to_le_bytes());
    bytes[8..].copy_from_slice(&splitmix64(counter ^ 0x6A09_E667_F3BC_C909).to_le_bytes());
    Xoshiro128PlusPlus::from_seed(bytes)
}

/// SplitMix64's output function of `x` (a bijection of u64).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Policy `p`'s actor: its layers `policy{p}.actor.layer{i}` from the first
/// (input `input`) to the last (output `output`), and its normaliser.
fn read_actor(
    tensors: &SafeTensors<'_>,
    p: usize,
    input: usize,
    output: usize,
    activation: Activation,
    normalized: bool,
) -> Result<Actor, LoadError> {
    let mut widths = vec![input];
    let mut params = Vec::new();
    let mut layer = 0;
    loop {
        let weight = actor_tensor_name(p, layer, false);
        let Ok(view) = tensors.tensor(&weight) else {
            if layer == 0 {
                return Err(LoadError::MissingTensor { name: weight });
            }
            break;
        };
        let n_in = widths[layer];
        let n_out = match view.shape() {
            [out, i] if *i == n_in => *out,
            got => {
                return Err(LoadError::TensorShape {
                    name: weight,
                    expected: vec![view.shape().first().copied().unwrap_or(0), n_in],
                    got: got.to_vec(),
                });
            }
        };
        params.extend(read_tensor(
            tensors,
            &weight,
            Dtype::F32,
            &[n_out, n_in],
            f32_le,
        )?);
        let bias = actor_tensor_name(p, layer, true);
        params.extend(read_tensor(tensors, &bias, Dtype::F32, &[n_out], f32_le)?);
        widths.push(n_out);
        layer += 1;
    }
    let name = format!("policy{p}.actor");
    if widths.last() != Some(&output) {
        let last = actor_tensor_name(p, layer - 1, false);
        let got = tensors
            .tensor(&last)
            .map(|v| v.shape().to_vec())
            .unwrap_or_default();
        return Err(LoadError::TensorShape {
            name: last,
            expected: vec![output, widths[widths.len() - 2]],
            got,
        });
    }
    if param_count(&widths) != Some(params.len()) {
        return Err(LoadError::Shape {
            name,
            source: crate::error::ShapeError::Overflow,
        });
    }
    Dense::new(&widths, &params, activation).map_err(|source| LoadError::Shape {
        name: name.clone(),
        source,
    })?;
    if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(LoadError::TensorValue {
            name,
            index,
            value: f64::from(value),
            rule: "must be finite",
        });
    }
    let norm = if normalized {
        let (mean_name, var_name) = (norm_mean_name(p), norm_var_name(p));
        let mean = read_tensor(tensors, &mean_name, Dtype::F64, &[input], f64_le)?;
        let var = read_tensor(tensors, &var_name, Dtype::F64, &[input], f64_le)?;
        if let Some((index, &value)) = mean.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(LoadError::TensorValue {
                name: mean_name,
                index,
                value,
                rule: "must be finite",
            });
        }
        if let Some((index, &value)) = var
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(LoadError::TensorValue {
                name: var_name,
                index,
                value,
                rule: "must be finite and >= 0",
            });
        }
        let std = var.iter().map(|&v| sqrt(v).max(STD_FLOOR)).collect();
        Some((mean, std))
    } else {
        None
    };
    Ok(Actor {
        widths,
        params,
        norm,
    })
}
