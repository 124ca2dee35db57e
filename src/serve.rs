//! The DFaaS platform's RL-strategy contract (`../shared/spec/
//! PLATFORM_STRATEGIES.md`, "What the platform's own RL strategy expects"),
//! without HTTP: the [`Mapping`] from platform node keys to a policy's
//! agents and neighbour slots, [`decode`] of an agent's `POST /action`
//! body into the environment's observation, and [`encode`] of an action
//! into the response's proportions. The `serve_policy` example puts these
//! behind HTTP.
//!
//! Observation conversion (platform key → environment feature, per
//! one-second step): `input_rate` → `input_rate`, `previous_input_rate` →
//! `prev_input_rate` (0, the platform's first-query default, → 1, what the
//! environment gives at step 0), `previous_fwd_to_<n>` →
//! `prev_forward_to_<slot of n>`, `previous_fwd_to_<n>_rejected` →
//! `prev_forward_rejects_to_<slot of n>`; requests/s are rounded to the
//! nearest whole count per step (halves away from zero) and clipped to the
//! largest input rate of training; the other keys are ignored.
//!
//! A policy of the agnostic layout serves any node ([`Mapping::any_node`]):
//! a request's node key is taken as it comes, and its neighbours are the
//! nodes its `previous_fwd_to_<n>` keys name, in ascending key order.
//!
//! A policy trained with gossip (`train_ppo --gossip`) also needs what
//! the node learns from its neighbours, which the platform's agents
//! exchange but its request does not carry today; [`decode`] then reads
//! it from four more keys of the node object: `capacity` (requests/s the
//! node serves without rejects) and, for each neighbour `<n>`,
//! `previous_input_rate_of_<n>`, `capacity_of_<n>` and `degree_of_<n>`
//! (its number of neighbours) — rounded as the rates are, the input rate
//! clipped as they are (capacities and degrees at 2²⁴).

use dfaas_infer::Policy;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Most neighbours of a node (an action holds `2 + k ≤ 64` entries).
const MAX_NEIGHBOURS: usize = dfaas_infer::MAX_ENTRIES - 2;

/// Which platform node is which agent, and which of its neighbours' keys
/// is which neighbour slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    nodes: Vec<NodeMap>,
    /// Whether any node is served, its neighbours read from the request.
    any_node: bool,
}

/// One platform node of a [`Mapping`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    /// Its key in requests and responses (`node_<peer id>`).
    pub key: String,
    /// The policy's agent index; `None` for a node of a request under
    /// [`Mapping::any_node`] (an agnostic policy acts for it as it is).
    pub agent: Option<usize>,
    /// Its neighbours' keys by slot (the agent's neighbour order).
    pub neighbours: Vec<String>,
}

/// A mapping file that does not fit the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// Occurs when the file is not the YAML/JSON of a mapping.
    #[error("mapping file: {0}")]
    Parse(String),
    /// Occurs when a node maps to an agent the policy does not have.
    #[error("nodes.{key}.agent: `{agent}` is not an agent of the checkpoint (agents: {agents})")]
    UnknownAgent {
        /// The node key.
        key: String,
        /// The agent named.
        agent: String,
        /// The checkpoint's agents.
        agents: String,
    },
    /// Occurs when two nodes map to the same agent.
    #[error("nodes.{key}.agent: agent `{agent}` is already mapped by nodes.{other}")]
    DuplicateAgent {
        /// The node key.
        key: String,
        /// The agent.
        agent: String,
        /// The node that maps it first.
        other: String,
    },
    /// Occurs when a neighbour key names no neighbour slot of the agent.
    #[error(
        "nodes.{key}.neighbours.{neighbour}: `{slot}` is not a neighbour of agent `{agent}` (its neighbours: {choices})"
    )]
    UnknownSlot {
        /// The node key.
        key: String,
        /// The neighbour key.
        neighbour: String,
        /// The slot as written.
        slot: String,
        /// The agent.
        agent: String,
        /// Its neighbours (names, slots 0..k).
        choices: String,
    },
    /// Occurs when two neighbour keys name the same slot.
    #[error("nodes.{key}.neighbours: slot {slot} (`{name}`) is mapped twice")]
    DuplicateSlot {
        /// The node key.
        key: String,
        /// The slot.
        slot: usize,
        /// Its neighbour's name.
        name: String,
    },
    /// Occurs when an agent's neighbour slot has no key.
    #[error(
        "nodes.{key}.neighbours: neighbour slot {slot} (`{name}`) of agent `{agent}` is not mapped; the agent has {degree} neighbours"
    )]
    MissingSlot {
        /// The node key.
        key: String,
        /// The slot.
        slot: usize,
        /// Its neighbour's name.
        name: String,
        /// The agent.
        agent: String,
        /// Its degree.
        degree: usize,
    },
    /// Occurs when the file maps no node.
    #[error("nodes: the mapping maps no node")]
    Empty,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    nodes: BTreeMap<String, NodeEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    agent: String,
    #[serde(default)]
    neighbours: BTreeMap<String, SlotRef>,
}

/// A neighbour slot by index or by the neighbour's node name.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SlotRef {
    Index(usize),
    Name(String),
}

impl Mapping {
    /// Every agent under its own node name, every neighbour under its
    /// name (what the server uses without `--mapping`).
    #[must_use]
    pub fn identity(policy: &Policy) -> Self {
        Self {
            nodes: policy
                .agents()
                .iter()
                .enumerate()
                .map(|(agent, a)| NodeMap {
                    key: a.name.clone(),
                    agent: Some(agent),
                    neighbours: a.neighbours.clone(),
                })
                .collect(),
            any_node: false,
        }
    }

    /// Every node key a request sends, with the neighbours its
    /// `previous_fwd_to_<n>` keys name (ascending, at most 62): what the
    /// server uses for a policy of the agnostic layout, which acts for a
    /// node of any degree.
    #[must_use]
    pub fn any_node() -> Self {
        Self {
            nodes: Vec::new(),
            any_node: true,
        }
    }

    /// Whether this is [`Mapping::any_node`].
    #[must_use]
    pub fn is_any_node(&self) -> bool {
        self.any_node
    }

    /// A mapping file's text (JSON when `json`, else YAML):
    ///
    /// ```yaml
    /// nodes:
    ///   node_12D3KooWAbc:          # the platform's key of a node
    ///     agent: node_0            # the checkpoint's agent it runs
    ///     neighbours:              # its neighbours' keys → the agent's slots,
    ///       node_12D3KooWDef: node_1   # by the neighbour's node name
    ///       node_12D3KooWGhi: 1        # or by slot index (0-based)
    /// ```
    ///
    /// Every mapped agent's neighbour slots must each get exactly one key.
    ///
    /// # Errors
    /// [`MappingError`] naming the entry that does not fit `policy`.
    pub fn parse(text: &str, json: bool, policy: &Policy) -> Result<Self, MappingError> {
        let file: MappingFile = if json {
            serde_json::from_str(text).map_err(|e| MappingError::Parse(e.to_string()))?
        } else {
            serde_norway::from_str(text).map_err(|e| MappingError::Parse(e.to_string()))?
        };
        if file.nodes.is_empty() {
            return Err(MappingError::Empty);
        }
        let agents = policy.agents();
        let mut nodes: Vec<NodeMap> = Vec::with_capacity(file.nodes.len());
        for (key, entry) in file.nodes {
            let Some(agent) = policy.agent_index(&entry.agent) else {
                return Err(MappingError::UnknownAgent {
                    key,
                    agent: entry.agent,
                    agents: agents
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if let Some(other) = nodes.iter().find(|n| n.agent == Some(agent)) {
                return Err(MappingError::DuplicateAgent {
                    key,
                    agent: entry.agent,
                    other: other.key.clone(),
                });
            }
            let names = &agents[agent].neighbours;
            let mut slots: Vec<Option<String>> = vec![None; names.len()];
            for (neighbour, slot) in entry.neighbours {
                let index = match &slot {
                    SlotRef::Index(i) => (*i < names.len()).then_some(*i),
                    SlotRef::Name(n) => names.iter().position(|m| m == n),
                };
                let Some(index) = index else {
                    return Err(MappingError::UnknownSlot {
                        key,
                        neighbour,
                        slot: match slot {
                            SlotRef::Index(i) => i.to_string(),
                            SlotRef::Name(n) => n,
                        },
                        agent: entry.agent,
                        choices: names.join(", "),
                    });
                };
                if slots[index].is_some() {
                    return Err(MappingError::DuplicateSlot {
                        key,
                        slot: index,
                        name: names[index].clone(),
                    });
                }
                slots[index] = Some(neighbour);
            }
            let mut neighbours = Vec::with_capacity(slots.len());
            for (slot, key_of) in slots.into_iter().enumerate() {
                let Some(k) = key_of else {
                    return Err(MappingError::MissingSlot {
                        key,
                        slot,
                        name: names[slot].clone(),
                        agent: entry.agent,
                        degree: names.len(),
                    });
                };
                neighbours.push(k);
            }
            nodes.push(NodeMap {
                key,
                agent: Some(agent),
                neighbours,
            });
        }
        Ok(Self {
            nodes,
            any_node: false,
        })
    }

    /// A mapping of `nodes` as given, not checked against a policy (what
    /// [`decode`] and [`encode`] need; [`Mapping::parse`] checks a file
    /// against the policy).
    #[must_use]
    pub fn from_nodes(nodes: Vec<NodeMap>) -> Self {
        Self {
            nodes,
            any_node: false,
        }
    }

    /// The node of request key `key`.
    #[must_use]
    pub fn node(&self, key: &str) -> Option<&NodeMap> {
        self.nodes.iter().find(|n| n.key == key)
    }

    /// The mapped nodes.
    #[must_use]
    pub fn nodes(&self) -> &[NodeMap] {
        &self.nodes
    }

    /// The widest observation of a mapped node (`2 + 2k`; any node:
    /// `2 + 2·62`).
    #[must_use]
    pub fn max_observation_len(&self) -> usize {
        if self.any_node {
            return 2 + 2 * MAX_NEIGHBOURS;
        }
        self.nodes
            .iter()
            .map(|n| 2 + 2 * n.neighbours.len())
            .max()
            .unwrap_or(2)
    }
}

/// A request the server answers with a 4xx: [`RequestError::status`],
/// [`RequestError::field`] (a dotted path into the body, `header <name>`
/// for a header, empty for the body itself) and the message (`Display`),
/// which names the value found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Occurs when the body is not JSON (400).
    #[error("malformed JSON: {reason}")]
    MalformedJson {
        /// The parser's message (line and column).
        reason: String,
    },
    /// Occurs when the `content-type` is not `application/json` (415).
    #[error("header content-type: must be application/json, got {got:?}")]
    ContentType {
        /// The header as sent.
        got: String,
    },
    /// Occurs when the body is longer than `limit` bytes (413).
    #[error("the body is over {limit} bytes (or could not be read)")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Occurs when the body does not arrive within `after` (408).
    #[error("the body did not arrive within {after:?}")]
    BodyTimeout {
        /// The time allowed.
        after: core::time::Duration,
    },
    /// Occurs when the `explore` header is not a boolean (422).
    #[error("header explore: must be true or false, got {got:?}")]
    ExploreHeader {
        /// The header as sent.
        got: String,
    },
    /// Occurs when a value that must be an object is not (422).
    #[error("{}must be {expected}, got {got}", prefix(field))]
    NotAnObject {
        /// The value's path (empty: the body).
        field: String,
        /// What it must be.
        expected: &'static str,
        /// The value found (JSON).
        got: String,
    },
    /// Occurs when `observation` does not hold exactly one node (422).
    #[error("observation: must hold exactly one node, got {got}")]
    NodeCount {
        /// The number of nodes sent.
        got: usize,
    },
    /// Occurs when the node is not one of the mapping's (422).
    #[error("observation.{key}: unknown node `{key}` (known: {known})")]
    UnknownNode {
        /// The node key sent.
        key: String,
        /// The mapped node keys.
        known: String,
    },
    /// Occurs when a `previous_fwd_to_<n>` key names a node that is not a
    /// mapped neighbour: the response could not carry its weight (422).
    #[error(
        "{field}: `{target}` is not a neighbour of `{node}` in the mapping (neighbours: {neighbours})"
    )]
    NotANeighbour {
        /// The key's path.
        field: String,
        /// The node the key forwards to.
        target: String,
        /// The requesting node.
        node: String,
        /// Its mapped neighbours.
        neighbours: String,
    },
    /// Occurs when a request under [`Mapping::any_node`] names more
    /// neighbours than an action holds (422).
    #[error("{field}: names {got} neighbours, at most {MAX_NEIGHBOURS} fit an action")]
    TooManyNeighbours {
        /// The node's path.
        field: String,
        /// Neighbours named.
        got: usize,
    },
    /// Occurs when a required key is missing (422).
    #[error("{field}: required key missing")]
    MissingKey {
        /// The key's path.
        field: String,
    },
    /// Occurs when a value that must be a number, or a boolean, is not (422).
    #[error("{field}: must be {expected}, got {got}")]
    WrongType {
        /// The value's path.
        field: String,
        /// What it must be.
        expected: &'static str,
        /// The value found (JSON).
        got: String,
    },
    /// Occurs when a rate is negative or not finite (422).
    #[error("{field}: must be finite and >= 0, got {got}")]
    OutOfRange {
        /// The value's path.
        field: String,
        /// The value found.
        got: f64,
    },
}

/// `field: ` (nothing for the body itself).
fn prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl RequestError {
    /// The HTTP status: 400 malformed JSON, 408 a body too slow, 413 one too
    /// long, 415 not JSON, 422 a body that does not fit.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedJson { .. } => 400,
            Self::BodyTimeout { .. } => 408,
            Self::BodyTooLarge { .. } => 413,
            Self::ContentType { .. } => 415,
            _ => 422,
        }
    }

    /// The field the error is about (`observation.node_1.input_rate`,
    /// `header content-type`; empty for the body itself).
    #[must_use]
    pub fn field(&self) -> String {
        match self {
            Self::MalformedJson { .. } | Self::BodyTooLarge { .. } | Self::BodyTimeout { .. } => {
                String::new()
            }
            Self::ContentType { .. } => "header content-type".into(),
            Self::ExploreHeader { .. } => "header explore".into(),
            Self::NodeCount { .. } => "observation".into(),
            Self::UnknownNode { key, .. } => format!("observation.{key}"),
            Self::NotAnObject { field, .. }
            | Self::NotANeighbour { field, .. }
            | Self::TooManyNeighbours { field, .. }
            | Self::MissingKey { field }
            | Self::WrongType { field, .. }
            | Self::OutOfRange { field, .. } => field.clone(),
        }
    }

    /// The JSON error body: `{"error": <the message>, "field": <the field>}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::json!({"error": self.to_string(), "field": self.field()}).to_string()
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Its node.
    pub node: DecodedNode,
    /// `agent_parameters.explore`, when the body gives it.
    pub explore: Option<bool>,
    /// Values clipped to the largest input rate of training.
    pub clipped: u32,
}

/// The node of a [`Decoded`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedNode {
    /// Index of the node in [`Mapping::nodes`].
    Mapped(usize),
    /// A node under [`Mapping::any_node`]: its key and the neighbours the
    /// request names.
    Any(NodeMap),
}

impl Decoded {
    /// The request's node in `mapping` (the one it was decoded with).
    #[must_use]
    pub fn node<'a>(&'a self, mapping: &'a Mapping) -> &'a NodeMap {
        match &self.node {
            DecodedNode::Mapped(i) => &mapping.nodes[*i],
            DecodedNode::Any(node) => node,
        }
    }
}

/// The neighbours a node object's `previous_fwd_to_<n>` keys name,
/// ascending (a node named by both of its keys counted once).
fn named_neighbours(node: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = node
        .keys()
        .filter_map(|name| name.strip_prefix("previous_fwd_to_"))
        .map(|target| {
            target
                .strip_suffix("_rejected")
                .unwrap_or(target)
                .to_string()
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The platform's value of `key` in `node` as a count per one-second step:
/// rounded (halves away from zero), clipped to `max` (counted in
/// `clipped`).
fn count(
    node: &Map<String, Value>,
    path: &str,
    key: &str,
    max: u32,
    clipped: &mut u32,
) -> Result<f32, RequestError> {
    let rounded = whole(node, path, key)?;
    if rounded > f64::from(max) {
        *clipped += 1;
        return Ok(max as f32);
    }
    Ok(rounded as f32)
}

/// The value of `key` in `node`, a finite number >= 0, rounded (halves
/// away from zero).
fn whole(node: &Map<String, Value>, path: &str, key: &str) -> Result<f64, RequestError> {
    let field = || format!("{path}.{key}");
    let value = node
        .get(key)
        .ok_or_else(|| RequestError::MissingKey { field: field() })?;
    let Some(x) = value.as_f64() else {
        return Err(RequestError::WrongType {
            field: field(),
            expected: "a number",
            got: value.to_string(),
        });
    };
    if !x.is_finite() || x < 0.0 {
        return Err(RequestError::OutOfRange {
            field: field(),
            got: x,
        });
    }
    Ok(x.round())
}

/// Prefixes of the per-neighbour gossip keys (`<prefix><n>`).
const GOSSIP_PREFIXES: [&str; 3] = ["previous_input_rate_of_", "capacity_of_", "degree_of_"];

/// Decodes the agent's `POST /action` body into `observation` (the
/// mapped agent's own `2 + 2k` environment values, in its prefix) and,
/// when `gossip` is given (for a policy trained with gossip), the node's
/// gossip into its prefix (`1 + 3k` values:
/// [`dfaas_infer::agnostic::gossip_rows`]' order; the keys are in the
/// module's documentation).
///
/// # Errors
/// [`RequestError`]: malformed JSON (400); no `observation` object with
/// exactly one node, an unknown node, a missing, non-numeric, negative or
/// non-finite required value (the gossip keys too when `gossip` is
/// given), a `previous_fwd_to_…` key (or, with `gossip`, a gossip key) of
/// a node that is not a mapped neighbour (the response could not carry
/// its weight), a non-boolean `explore` (422).
///
/// # Panics
/// When `observation` is shorter than [`Mapping::max_observation_len`],
/// or `gossip` shorter than `1 + 3·62` (a caller's mistake, not a
/// request's).
pub fn decode(
    body: &[u8],
    mapping: &Mapping,
    max_input_rate: u32,
    observation: &mut [f32],
    gossip: Option<&mut [f32]>,
) -> Result<Decoded, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::MalformedJson {
        reason: e.to_string(),
    })?;
    let Value::Object(top) = value else {
        return Err(RequestError::NotAnObject {
            field: String::new(),
            expected: "a JSON object",
            got: value.to_string(),
        });
    };
    let explore = match top.get("agent_parameters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => match p.get("explore") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(RequestError::WrongType {
                    field: "agent_parameters.explore".into(),
                    expected: "true or false",
                    got: other.to_string(),
                });
            }
        },
        Some(other) => {
            return Err(RequestError::NotAnObject {
                field: "agent_parameters".into(),
                expected: "an object",
                got: other.to_string(),
            });
        }
    };
    let nodes = match top.get("observation") {
        Some(Value::Object(nodes)) => nodes,
        None => {
            return Err(RequestError::MissingKey {
                field: "observation".into(),
            });
        }
        Some(other) => {
            return Err(RequestError::NotAnObject {
                field: "observation".into(),
                expected: "an object holding the local node",
                got: other.to_string(),
            });
        }
    };
    let mut entries = nodes.iter();
    let (Some((key, node)), None) = (entries.next(), entries.next()) else {
        return Err(RequestError::NodeCount { got: nodes.len() });
    };
    let path = format!("observation.{key}");
    let Value::Object(node) = node else {
        return Err(RequestError::NotAnObject {
            field: path,
            expected: "an object",
            got: node.to_string(),
        });
    };
    let decoded_node = if mapping.any_node {
        let neighbours = named_neighbours(node);
        if neighbours.len() > MAX_NEIGHBOURS {
            return Err(RequestError::TooManyNeighbours {
                field: path,
                got: neighbours.len(),
            });
        }
        DecodedNode::Any(NodeMap {
            key: key.clone(),
            agent: None,
            neighbours,
        })
    } else {
        let Some(index) = mapping.nodes.iter().position(|n| &n.key == key) else {
            let known: Vec<&str> = mapping.nodes.iter().map(|n| n.key.as_str()).collect();
            return Err(RequestError::UnknownNode {
                key: key.clone(),
                known: known.join(", "),
            });
        };
        DecodedNode::Mapped(index)
    };
    let map = match &decoded_node {
        DecodedNode::Mapped(i) => &mapping.nodes[*i],
        DecodedNode::Any(node) => node,
    };
    let k = map.neighbours.len();
    assert!(
        observation.len() >= 2 + 2 * k,
        "decode: the observation buffer holds {} values, node `{key}` needs {} (Mapping::max_observation_len)",
        observation.len(),
        2 + 2 * k
    );
    // Forwards (and gossip) of nodes that are not mapped neighbours: the
    // policy has no weight for them.
    for name in node.keys() {
        let target = match name.strip_prefix("previous_fwd_to_") {
            Some(target) => target.strip_suffix("_rejected").unwrap_or(target),
            None if gossip.is_some() => {
                match GOSSIP_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
                    Some(target) => target,
                    None => continue,
                }
            }
            None => continue,
        };
        if !map.neighbours.iter().any(|n| n == target) {
            return Err(RequestError::NotANeighbour {
                field: format!("{path}.{name}"),
                target: target.into(),
                node: key.clone(),
                neighbours: map.neighbours.join(", "),
            });
        }
    }
    let mut clipped = 0;
    let max = max_input_rate;
    observation[0] = count(node, &path, "input_rate", max, &mut clipped)?;
    // The platform's first query sends 0; the environment's step 0 has 1.
    observation[1] = count(node, &path, "previous_input_rate", max, &mut clipped)?.max(1.0);
    for (j, n) in map.neighbours.iter().enumerate() {
        observation[2 + j] = count(
            node,
            &path,
            &format!("previous_fwd_to_{n}"),
            max,
            &mut clipped,
        )?;
        observation[2 + k + j] = count(
            node,
            &path,
            &format!("previous_fwd_to_{n}_rejected"),
            max,
            &mut clipped,
        )?;
    }
    if let Some(gossip) = gossip {
        assert!(
            gossip.len() > 3 * MAX_NEIGHBOURS,
            "decode: the gossip buffer holds {} values, a node may need {}",
            gossip.len(),
            1 + 3 * MAX_NEIGHBOURS
        );
        // Capacities and degrees clipped where f32 still holds every whole
        // number.
        const EXACT: u32 = 1 << 24;
        gossip[0] = count(node, &path, "capacity", EXACT, &mut clipped)?;
        for (j, n) in map.neighbours.iter().enumerate() {
            let [rate, capacity, degree] = GOSSIP_PREFIXES.map(|p| format!("{p}{n}"));
            gossip[1 + 3 * j] = count(node, &path, &rate, max, &mut clipped)?;
            gossip[2 + 3 * j] = count(node, &path, &capacity, EXACT, &mut clipped)?;
            gossip[3 + 3 * j] = count(node, &path, &degree, EXACT, &mut clipped)?;
        }
    }
    Ok(Decoded {
        node: decoded_node,
        explore,
        clipped,
    })
}

/// Whole percentages `n_i` with `Σ n_i = 100` from `action` (at most
/// [`dfaas_infer::MAX_ENTRIES`] entries are used; largest
/// remainder: each share's floor, then one more to the largest remainders,
/// ties to the earlier entry). Entries are clamped to `[0, ∞)` and
/// normalised first; an all-zero action gives everything to the first.
/// Returns the sum written (100 when `out` holds every entry).
pub fn percentages(action: &[f32], out: &mut [u32]) -> u32 {
    let total: f64 = action.iter().map(|&p| f64::from(p.max(0.0))).sum();
    let mut given = 0u32;
    let mut rema = [(0f64, 0usize); dfaas_infer::MAX_ENTRIES];
    let k = action.len().min(out.len()).min(rema.len());
    for i in 0..k {
        let share = if total > 0.0 && total.is_finite() {
            100.0 * f64::from(action[i].max(0.0)) / total
        } else if i == 0 {
            100.0
        } else {
            0.0
        };
        let whole = share.floor().clamp(0.0, 100.0);
        out[i] = whole as u32;
        given += out[i];
        rema[i] = (share - whole, i);
    }
    let rema = &mut rema[..k];
    rema.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = 100u32.saturating_sub(given);
    for &(_, i) in rema.iter().cycle().take(k.max(1) * 100) {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out[..k].iter().sum()
}

/// The response body for `node` and its `action` (`[local, forward_1..k,
/// reject]`): `{"<key>": {"local": p, "<neighbour key>": p, …, "reject":
/// p}}`, each `p = n/100` written with two decimals, `Σ n = 100`.
#[must_use]
pub fn encode(node: &NodeMap, action: &[f32]) -> String {
    let k = node.neighbours.len();
    let mut n = vec![0u32; k + 2];
    percentages(action, &mut n);
    let mut out = String::with_capacity(64 + 24 * k);
    let quoted = |s: &str| Value::String(s.to_string()).to_string();
    let number = |v: u32| format!("{}.{:02}", v / 100, v % 100);
    let _ = write!(out, "{{{}:{{\"local\":{}", quoted(&node.key), number(n[0]));
    for (j, key) in node.neighbours.iter().enumerate() {
        let _ = write!(out, ",{}:{}", quoted(key), number(n[1 + j]));
    }
    let _ = write!(out, ",\"reject\":{}}}}}", number(n[k + 1]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfaas_core::{EnvConfig, EnvModel};
    use dfaas_policies::backend::CpuBackend;
    use dfaas_policies::ppo::{PpoConfig, Trainer};

    /// The policy of an untrained checkpoint of `node_0 node_1 node_2`,
    /// `node_1 node_2` (every node has 2 neighbours).
    fn policy() -> Policy {
        let built = EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
            .build()
            .unwrap();
        let config = PpoConfig {
            hidden: vec![4],
            num_envs: 1,
            rollout_steps: 48,
            minibatch_size: 48,
            ..PpoConfig::default()
        };
        let trainer =
            Trainer::new(EnvModel::new(&built).unwrap(), config, CpuBackend::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        dfaas_policies::checkpoint::save(&trainer, dir.path()).unwrap();
        Policy::from_safetensors(&std::fs::read(dir.path().join("policies.safetensors")).unwrap())
            .unwrap()
    }

    #[test]
    fn json_mappings_by_name_and_slot() {
        let policy = policy();
        let text = r#"{"nodes": {
            "node_P": {"agent": "node_1", "neighbours": {"node_Q": "node_2", "node_R": 0}}
        }}"#;
        let mapping = Mapping::parse(text, true, &policy).unwrap();
        assert_eq!(
            mapping.nodes(),
            &[NodeMap {
                key: "node_P".into(),
                agent: Some(1),
                neighbours: vec!["node_R".into(), "node_Q".into()],
            }]
        );
        let err = Mapping::parse(r#"{"nodes": {}}"#, true, &policy).unwrap_err();
        assert_eq!(err, MappingError::Empty);
        let twice = r#"{"nodes": {"node_P": {"agent": "node_1",
            "neighbours": {"node_Q": "node_2", "node_R": 1}}}}"#;
        assert_eq!(
            Mapping::parse(twice, true, &policy)
                .unwrap_err()
                .to_string(),
            "nodes.node_P.neighbours: slot 1 (`node_2`) is mapped twice"
        );
        let unknown_field = r#"{"nodes": {"node_P": {"agent": "node_1", "peers": {}}}}"#;
        assert!(matches!(
            Mapping::parse(unknown_field, true, &policy),
            Err(MappingError::Parse(_))
        ));
    }

    #[test]
    fn decoding_converts_the_platforms_units() {
        let policy = policy();
        let mapping = Mapping::identity(&policy);
        let mut obs = [f32::NAN; 6];
        let body = br#"{"observation": {"node_2": {
            "input_rate": 12.5, "previous_input_rate": 0,
            "previous_fwd_to_node_0": 2.4, "previous_fwd_to_node_0_rejected": 0.5,
            "previous_fwd_to_node_1": 1e6, "previous_fwd_to_node_1_rejected": 0,
            "cpu_utilization": 0.3, "something_else": "ignored",
            "previous_avg_resp_time_fwd_to_node_0": 9.0
        }}}"#;
        let decoded = decode(body, &mapping, 150, &mut obs, None).unwrap();
        assert_eq!(decoded.node, DecodedNode::Mapped(2));
        assert_eq!(decoded.explore, None);
        assert_eq!(decoded.clipped, 1);
        // Halves away from zero; the first query's 0 read as 1; clipped.
        assert_eq!(obs, [13.0, 1.0, 2.0, 150.0, 1.0, 0.0]);
        let err = decode(b"[1]", &mapping, 150, &mut obs, None).unwrap_err();
        assert_eq!((err.status(), err.field()), (422, String::new()));
        let err = decode(b"{\"observation\": {}}", &mapping, 150, &mut obs, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "observation: must hold exactly one node, got 0"
        );
    }

    #[test]
    fn any_node_reads_the_neighbours_from_the_request() {
        let mapping = Mapping::any_node();
        let mut obs = [f32::NAN; 2 + 2 * 62];
        let body = br#"{"observation": {"node_X": {
            "input_rate": 7, "previous_input_rate": 6,
            "previous_fwd_to_node_Z": 2, "previous_fwd_to_node_Z_rejected": 1,
            "previous_fwd_to_node_Y": 3, "previous_fwd_to_node_Y_rejected": 0,
            "previous_avg_resp_time_fwd_to_node_W": 9.0
        }}}"#;
        let decoded = decode(body, &mapping, 150, &mut obs, None).unwrap();
        let node = decoded.node(&mapping);
        assert_eq!(node.key, "node_X");
        assert_eq!(node.agent, None);
        assert_eq!(node.neighbours, ["node_Y", "node_Z"]);
        assert_eq!(&obs[..6], &[7.0, 6.0, 3.0, 2.0, 0.0, 1.0]);
        // A neighbour named by one key only misses the other.
        let half = br#"{"observation": {"node_X": {"input_rate": 7,
            "previous_input_rate": 6, "previous_fwd_to_node_Y_rejected": 0}}}"#;
        let err = decode(half, &mapping, 150, &mut obs, None).unwrap_err();
        assert_eq!(err.field(), "observation.node_X.previous_fwd_to_node_Y");
        // No neighbours: local and reject only.
        let alone = br#"{"observation": {"n": {"input_rate": 1, "previous_input_rate": 1}}}"#;
        let decoded = decode(alone, &mapping, 150, &mut obs, None).unwrap();
        assert!(decoded.node(&mapping).neighbours.is_empty());
        // 63 neighbours do not fit an action.
        let many: Vec<String> = (0..63)
            .map(|i| format!("\"previous_fwd_to_n{i}\": 0, \"previous_fwd_to_n{i}_rejected\": 0"))
            .collect();
        let body = format!(
            "{{\"observation\": {{\"n\": {{\"input_rate\": 1, \"previous_input_rate\": 1, {}}}}}}}",
            many.join(", ")
        );
        let err = decode(body.as_bytes(), &mapping, 150, &mut obs, None).unwrap_err();
        assert_eq!((err.status(), err.field()), (422, "observation.n".into()));
    }

    #[test]
    fn gossip_is_read_for_each_named_neighbour() {
        let mapping = Mapping::any_node();
        let (mut obs, mut gossip) = ([f32::NAN; 2 + 2 * 62], [f32::NAN; 1 + 3 * 62]);
        let body = br#"{"observation": {"node_X": {
            "input_rate": 7, "previous_input_rate": 6, "capacity": 22.4,
            "previous_fwd_to_node_Z": 2, "previous_fwd_to_node_Z_rejected": 1,
            "previous_fwd_to_node_Y": 3, "previous_fwd_to_node_Y_rejected": 0,
            "previous_input_rate_of_node_Y": 30.5, "capacity_of_node_Y": 22,
            "degree_of_node_Y": 4, "previous_input_rate_of_node_Z": 900,
            "capacity_of_node_Z": 40, "degree_of_node_Z": 1
        }}}"#;
        let decoded = decode(body, &mapping, 150, &mut obs, Some(&mut gossip)).unwrap();
        assert_eq!(decoded.node(&mapping).neighbours, ["node_Y", "node_Z"]);
        // Neighbours ascending; rounded; Z's rate clipped.
        assert_eq!(&gossip[..7], &[22.0, 31.0, 22.0, 4.0, 150.0, 40.0, 1.0]);
        assert_eq!(decoded.clipped, 1);
        // Without a gossip buffer the keys are ignored.
        assert!(decode(body, &mapping, 150, &mut obs, None).is_ok());
        // A missing key, a bad value, a node that is not a neighbour.
        let text = std::str::from_utf8(body).unwrap();
        for (body, field) in [
            (
                text.replace("\"degree_of_node_Z\": 1", "\"x\": 1"),
                "observation.node_X.degree_of_node_Z",
            ),
            (
                text.replace("\"capacity\": 22.4", "\"capacity\": -1"),
                "observation.node_X.capacity",
            ),
            (
                text.replace("capacity_of_node_Y", "capacity_of_node_Q"),
                "observation.node_X.capacity_of_node_Q",
            ),
        ] {
            let err = decode(body.as_bytes(), &mapping, 150, &mut obs, Some(&mut gossip));
            let err = err.unwrap_err();
            assert_eq!((err.status(), err.field()), (422, field.into()), "{err}");
        }
    }

    #[test]
    fn percentages_sum_to_100_by_largest_remainder() {
        let mut out = [0u32; 4];
        assert_eq!(percentages(&[0.333, 0.333, 0.334, 0.0], &mut out), 100);
        assert_eq!(out, [33, 33, 34, 0]);
        assert_eq!(percentages(&[1.0 / 3.0; 3], &mut out[..3]), 100);
        assert_eq!(&out[..3], &[34, 33, 33]);
        assert_eq!(percentages(&[0.126, 0.874], &mut out[..2]), 100);
        assert_eq!(&out[..2], &[13, 87]);
        assert_eq!(percentages(&[0.0, 0.0], &mut out[..2]), 100);
        assert_eq!(&out[..2], &[100, 0]);
        assert_eq!(percentages(&[f32::NAN, 1.0], &mut out[..2]), 100);
    }

    #[test]
    fn responses_are_two_decimal_proportions() {
        let node = NodeMap {
            key: "node_A".into(),
            agent: Some(0),
            neighbours: vec!["node_B".into(), "node_C".into()],
        };
        assert_eq!(
            encode(&node, &[0.5, 0.071, 0.0, 0.429]),
            r#"{"node_A":{"local":0.50,"node_B":0.07,"node_C":0.00,"reject":0.43}}"#
        );
        assert_eq!(
            encode(&node, &[1.0, 0.0, 0.0, 0.0]),
            r#"{"node_A":{"local":1.00,"node_B":0.00,"node_C":0.00,"reject":0.00}}"#
        );
        // A short action (or a node wider than any policy) is not a panic.
        assert_eq!(
            encode(&node, &[0.25]),
            r#"{"node_A":{"local":1.00,"node_B":0.00,"node_C":0.00,"reject":0.00}}"#
        );
        let wide = NodeMap {
            key: "w".into(),
            agent: None,
            neighbours: (0..100).map(|i| format!("n{i}")).collect(),
        };
        assert!(encode(&wide, &[0.5; 102]).starts_with(r#"{"w":{"local":"#));
    }
}
