//! Topology generators: federations of any size without writing the
//! adjacency lines by hand (`network_generator` in the configuration).
//!
//! Every generator produces the lines a user could have written, for nodes
//! called `node_0..node_{N-1}`: line `i` is `node_i` followed by its
//! neighbours of smaller index in ascending order (line 0 is `node_0`
//! alone). So agent order is node-index order and every node's neighbour
//! order is ascending index order. The graphs are connected (but for a
//! `union`: one component per part), have no self
//! links and no node with more than [`MAX_NEIGHBOURS`] neighbours (the
//! action layout's limit, `MAX_ACTIONS - 2`):
//!
//! | kind | parameters | degrees | over the cap |
//! |---|---|---|---|
//! | `ring` | `nodes` | 2 (1 for 2 nodes) | never |
//! | `grid` | `rows`, `cols` | 4-neighbour: 2 to 4 | never |
//! | `random_geometric` | `nodes`, `radius`, `seed` | random | refused |
//! | `barabasi_albert` | `nodes`, `m`, `seed` | ≥ m, hubs capped | capped |
//! | `star_of_stars` | `hubs`, `leaves_per_hub`, `hub_links` | hub: links to hubs + leaves; leaf: 1 | refused |
//! | `union` | `parts` (≥ 2 generators, no union) | each part's | each part's |
//!
//! Random kinds are deterministic in their own `seed` (a stream of
//! [`crate::rng::seeded`], independent of `build_seed`):
//! * `random_geometric`: node `i` gets the point `(x, y)`, both uniform on
//!   `[0, 1)`, drawn `x` then `y` for node 0, 1, … (53-bit
//!   [`crate::rng::uniform01`]); nodes at distance ≤ `radius` are linked.
//!   If a node would get more than [`MAX_NEIGHBOURS`] neighbours, the
//!   generator refuses (an error naming `network_generator.radius`: use a
//!   smaller radius). The graph is then made connected: components are
//!   taken in the order of their smallest node; each one, except the first,
//!   is joined by one extra link, the shortest between one of its nodes and
//!   a node outside it (among nodes already joined or not), both endpoints
//!   under the cap, ties going to the smaller pair of indices.
//! * `barabasi_albert`: nodes `0..=m` form a full mesh; each later node `i`
//!   links to `m` distinct earlier nodes drawn one after the other with
//!   probability proportional to their degree, among nodes with fewer than
//!   [`MAX_NEIGHBOURS`] neighbours (a hub at the cap stops receiving
//!   links). Each draw is one [`crate::rng::below`] over the summed degree.
//!   `m` must be at most 31: each new node then brings at least as much
//!   room under the cap as it takes, so `m` targets under the cap always
//!   exist.
//!
//! `star_of_stars`: hubs are `node_0..node_{hubs-1}`, linked as a full mesh
//! (`hub_links: mesh`, the default) or a ring (`hub_links: ring`); the
//! leaves of hub `k` are the `leaves_per_hub` nodes after the hubs starting
//! at `node_{hubs + k·leaves_per_hub}`, each linked to its hub only. A hub
//! with more than [`MAX_NEIGHBOURS`] neighbours is refused.

use crate::alloc_prelude::*;
use crate::error::ConfigError;
use crate::rng::{below, seeded, uniform01};
use crate::split::MAX_ACTIONS;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Most neighbours a node may have (`MAX_ACTIONS - 2`: an action holds the
/// local share, one forward per neighbour and the reject share).
pub const MAX_NEIGHBOURS: usize = MAX_ACTIONS - 2;

/// Most nodes a generator produces.
pub const MAX_GENERATED_NODES: i64 = 10_000;

/// Largest `m` of `barabasi_albert` (see the module docs).
pub const MAX_BARABASI_ALBERT_M: i64 = (MAX_NEIGHBOURS / 2) as i64;

/// How the hubs of `star_of_stars` are linked to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HubLinks {
    /// Every hub linked to every other hub (the default).
    #[default]
    Mesh,
    /// Hub `k` linked to hubs `k ± 1` (mod `hubs`).
    Ring,
}

/// A topology generator (`network_generator: {kind: …, …}`); see the
/// module docs for what each kind builds.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
pub enum NetworkGenerator {
    /// `nodes` nodes in a cycle (2..=10 000; two nodes: one link).
    Ring {
        /// Number of nodes.
        nodes: i64,
    },
    /// A `rows × cols` grid, each node linked to its up/down/left/right
    /// neighbours; node `r·cols + c` is at row `r`, column `c`
    /// (`rows, cols >= 1`, 2..=10 000 nodes).
    Grid {
        /// Number of rows.
        rows: i64,
        /// Number of columns.
        cols: i64,
    },
    /// Points uniform in the unit square, linked when at distance ≤
    /// `radius`, then made connected.
    RandomGeometric {
        /// Number of nodes (2..=10 000).
        nodes: i64,
        /// Link distance in the unit square (finite, > 0).
        radius: f64,
        /// Seed of the points.
        seed: u64,
    },
    /// Preferential attachment with `m` links per new node, hubs capped
    /// at [`MAX_NEIGHBOURS`] neighbours.
    BarabasiAlbert {
        /// Number of nodes (2..=10 000, > m).
        nodes: i64,
        /// Links of each new node (1..=31).
        m: i64,
        /// Seed of the attachment draws.
        seed: u64,
    },
    /// Hubs linked to each other, each with its own leaves.
    StarOfStars {
        /// Number of hubs (>= 1).
        hubs: i64,
        /// Leaves of each hub (>= 0; at least 2 nodes in all).
        leaves_per_hub: i64,
        /// How the hubs are linked (default `mesh`).
        #[cfg_attr(feature = "serde", serde(default))]
        hub_links: HubLinks,
    },
    /// Several federations side by side, with no link between them: the
    /// nodes of `parts[0]` first (`node_0..`), then those of `parts[1]`,
    /// and so on, each part's nodes in its own order. A training pool of
    /// federations for a topology-agnostic policy: one env holds them all.
    /// Unlike the other kinds, the graph is not connected (one component
    /// per part, at least two parts; a part is any generator but `union`).
    Union {
        /// The federations, in node order.
        parts: Vec<NetworkGenerator>,
    },
}

/// `network_generator.<key>`.
fn field(key: &str) -> String {
    format!("network_generator.{key}")
}

/// A node count in `2..=MAX_GENERATED_NODES` (`value` is what is shown).
fn node_count(key: &str, count: i64, value: impl core::fmt::Display) -> Result<usize, ConfigError> {
    if (2..=MAX_GENERATED_NODES).contains(&count) {
        Ok(count as usize)
    } else {
        Err(ConfigError::invalid(
            field(key),
            value,
            format!("must give 2..={MAX_GENERATED_NODES} nodes"),
        ))
    }
}

/// The parts of a `union`, checked: at least two, none a `union` itself.
fn union_parts(parts: &[NetworkGenerator]) -> Result<&[NetworkGenerator], ConfigError> {
    if parts.len() < 2 {
        return Err(ConfigError::invalid(
            field("parts"),
            format!("{} parts", parts.len()),
            "a union needs at least 2 parts",
        ));
    }
    if let Some(i) = parts
        .iter()
        .position(|p| matches!(p, NetworkGenerator::Union { .. }))
    {
        return Err(ConfigError::invalid(
            format!("network_generator.parts[{i}].kind"),
            "union",
            "a part of a union cannot be a union",
        ));
    }
    Ok(parts)
}

/// `error` of part `i` of a union, its field renamed
/// `network_generator.parts[i].<key>`.
fn in_part(error: ConfigError, i: usize) -> ConfigError {
    match error {
        ConfigError::Invalid {
            field,
            value,
            reason,
        } => ConfigError::Invalid {
            field: field.replacen(
                "network_generator.",
                &format!("network_generator.parts[{i}]."),
                1,
            ),
            value,
            reason,
        },
        other => other,
    }
}

impl NetworkGenerator {
    /// Name of the kind as written in a configuration (`ring`, …).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ring { .. } => "ring",
            Self::Grid { .. } => "grid",
            Self::RandomGeometric { .. } => "random_geometric",
            Self::BarabasiAlbert { .. } => "barabasi_albert",
            Self::StarOfStars { .. } => "star_of_stars",
            Self::Union { .. } => "union",
        }
    }

    /// Number of nodes the generator produces, once its parameters are
    /// valid.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `network_generator.<parameter>` and
    /// its value when a parameter is out of range (see each variant).
    pub fn num_nodes(&self) -> Result<usize, ConfigError> {
        match *self {
            Self::Ring { nodes } => node_count("nodes", nodes, nodes),
            Self::Grid { rows, cols } => {
                for (key, value) in [("rows", rows), ("cols", cols)] {
                    if !(1..=MAX_GENERATED_NODES).contains(&value) {
                        return Err(ConfigError::invalid(
                            field(key),
                            value,
                            format!("must be in 1..={MAX_GENERATED_NODES}"),
                        ));
                    }
                }
                node_count("rows", rows * cols, format!("{rows} (× cols {cols})"))
            }
            Self::RandomGeometric { nodes, radius, .. } => {
                let n = node_count("nodes", nodes, nodes)?;
                if !(radius.is_finite() && radius > 0.0) {
                    return Err(ConfigError::invalid(
                        field("radius"),
                        radius,
                        "must be finite and > 0",
                    ));
                }
                Ok(n)
            }
            Self::BarabasiAlbert { nodes, m, .. } => {
                let n = node_count("nodes", nodes, nodes)?;
                if !(1..=MAX_BARABASI_ALBERT_M).contains(&m) {
                    return Err(ConfigError::invalid(
                        field("m"),
                        m,
                        format!(
                            "must be in 1..={MAX_BARABASI_ALBERT_M} (so that every new node finds m targets under the cap of {MAX_NEIGHBOURS} neighbours)"
                        ),
                    ));
                }
                if m >= nodes {
                    return Err(ConfigError::invalid(
                        field("m"),
                        m,
                        format!("must be < nodes ({nodes})"),
                    ));
                }
                Ok(n)
            }
            Self::StarOfStars {
                hubs,
                leaves_per_hub,
                hub_links,
            } => {
                if !(1..=MAX_GENERATED_NODES).contains(&hubs) {
                    return Err(ConfigError::invalid(
                        field("hubs"),
                        hubs,
                        format!("must be in 1..={MAX_GENERATED_NODES}"),
                    ));
                }
                if !(0..MAX_GENERATED_NODES).contains(&leaves_per_hub) {
                    return Err(ConfigError::invalid(
                        field("leaves_per_hub"),
                        leaves_per_hub,
                        format!("must be in 0..{MAX_GENERATED_NODES}"),
                    ));
                }
                let hub_neighbours = match hub_links {
                    HubLinks::Mesh => hubs - 1,
                    HubLinks::Ring => (hubs - 1).min(2),
                };
                if hub_neighbours + leaves_per_hub > MAX_NEIGHBOURS as i64 {
                    return Err(ConfigError::invalid(
                        field("leaves_per_hub"),
                        leaves_per_hub,
                        format!(
                            "a hub would have {hub_neighbours} hub neighbours + {leaves_per_hub} leaves; at most {MAX_NEIGHBOURS} neighbours in all"
                        ),
                    ));
                }
                node_count(
                    "hubs",
                    hubs * (1 + leaves_per_hub),
                    format!("{hubs} (× (1 + leaves_per_hub {leaves_per_hub}))"),
                )
            }
            Self::Union { ref parts } => {
                let mut total = 0usize;
                for (i, part) in union_parts(parts)?.iter().enumerate() {
                    total += part.num_nodes().map_err(|e| in_part(e, i))?;
                }
                node_count("parts", total as i64, format!("{total} nodes in all"))
            }
        }
    }

    /// The generated graph as sorted adjacency lists (`adjacency[i]`: the
    /// neighbours of node `i` in ascending order).
    ///
    /// # Errors
    /// As [`NetworkGenerator::num_nodes`]; for `random_geometric`, also
    /// when a node would have more than [`MAX_NEIGHBOURS`] neighbours.
    pub fn adjacency(&self) -> Result<Vec<Vec<u32>>, ConfigError> {
        let n = self.num_nodes()?;
        let mut graph = Graph::new(n);
        match *self {
            Self::Ring { .. } => {
                for i in 1..n {
                    graph.link(i - 1, i);
                }
                if n > 2 {
                    graph.link(n - 1, 0);
                }
            }
            Self::Grid { cols, .. } => {
                let cols = cols as usize;
                for i in 0..n {
                    if i % cols + 1 < cols {
                        graph.link(i, i + 1);
                    }
                    if i + cols < n {
                        graph.link(i, i + cols);
                    }
                }
            }
            Self::RandomGeometric { radius, seed, .. } => {
                random_geometric(&mut graph, radius, seed)?;
            }
            Self::BarabasiAlbert { m, seed, .. } => barabasi_albert(&mut graph, m as usize, seed),
            Self::StarOfStars {
                hubs,
                leaves_per_hub,
                hub_links,
            } => {
                let (hubs, leaves) = (hubs as usize, leaves_per_hub as usize);
                match hub_links {
                    HubLinks::Mesh => {
                        for a in 0..hubs {
                            for b in a + 1..hubs {
                                graph.link(a, b);
                            }
                        }
                    }
                    HubLinks::Ring => {
                        for a in 1..hubs {
                            graph.link(a - 1, a);
                        }
                        if hubs > 2 {
                            graph.link(hubs - 1, 0);
                        }
                    }
                }
                for hub in 0..hubs {
                    for j in 0..leaves {
                        graph.link(hub, hubs + hub * leaves + j);
                    }
                }
            }
            Self::Union { ref parts } => {
                // Each part's links, its nodes shifted past the parts before.
                let mut offset = 0;
                for (i, part) in parts.iter().enumerate() {
                    let rows = part.adjacency().map_err(|e| in_part(e, i))?;
                    for (a, row) in rows.iter().enumerate() {
                        for &b in row.iter().filter(|&&b| (b as usize) > a) {
                            graph.link(offset + a, offset + b as usize);
                        }
                    }
                    offset += rows.len();
                }
            }
        }
        let mut adjacency = graph.adjacency;
        for row in &mut adjacency {
            row.sort_unstable();
        }
        Ok(adjacency)
    }

    /// The adjacency lines of the generated graph (see the module docs):
    /// what `build` puts in `network`.
    ///
    /// # Errors
    /// As [`NetworkGenerator::adjacency`].
    pub fn lines(&self) -> Result<Vec<String>, ConfigError> {
        let adjacency = self.adjacency()?;
        Ok(adjacency
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut line = format!("node_{i}");
                for &j in row.iter().take_while(|&&j| (j as usize) < i) {
                    line.push_str(&format!(" node_{j}"));
                }
                line
            })
            .collect())
    }
}

/// An undirected graph being generated (no duplicate links: every caller
/// links a pair at most once).
struct Graph {
    adjacency: Vec<Vec<u32>>,
}

impl Graph {
    fn new(n: usize) -> Self {
        Self {
            adjacency: vec![Vec::new(); n],
        }
    }

    fn link(&mut self, a: usize, b: usize) {
        self.adjacency[a].push(b as u32);
        self.adjacency[b].push(a as u32);
    }

    fn degree(&self, a: usize) -> usize {
        self.adjacency[a].len()
    }
}

/// Squared distance of two points.
fn distance2(p: (f64, f64), q: (f64, f64)) -> f64 {
    let (dx, dy) = (p.0 - q.0, p.1 - q.1);
    dx * dx + dy * dy
}

/// Links points within `radius` (through a grid of cells at least `radius`
/// wide, so only the 3 × 3 cells around a point are searched), refusing a
/// node over the cap, then joins the components (module docs).
fn random_geometric(graph: &mut Graph, radius: f64, seed: u64) -> Result<(), ConfigError> {
    let n = graph.adjacency.len();
    let mut rng = seeded(seed);
    let points: Vec<(f64, f64)> = (0..n)
        .map(|_| {
            let x = uniform01(&mut rng);
            (x, uniform01(&mut rng))
        })
        .collect();
    let r2 = radius * radius;
    // Cells per side: at most 1/radius (cells at least radius wide) and at
    // most about √n (bounded memory for tiny radii).
    let by_radius = if radius >= 1.0 {
        1
    } else {
        libm::floor(1.0 / radius).min(1e6) as usize
    };
    let side = by_radius
        .min(libm::ceil(libm::sqrt(n as f64)) as usize)
        .max(1);
    let cell_of = |p: (f64, f64)| {
        let cx = ((p.0 * side as f64) as usize).min(side - 1);
        let cy = ((p.1 * side as f64) as usize).min(side - 1);
        (cx, cy)
    };
    let mut cells: Vec<Vec<u32>> = vec![Vec::new(); side * side];
    for (i, &p) in points.iter().enumerate() {
        let (cx, cy) = cell_of(p);
        cells[cy * side + cx].push(i as u32);
    }
    for (i, &p) in points.iter().enumerate() {
        let (cx, cy) = cell_of(p);
        for ny in cy.saturating_sub(1)..=(cy + 1).min(side - 1) {
            for nx in cx.saturating_sub(1)..=(cx + 1).min(side - 1) {
                for &j in &cells[ny * side + nx] {
                    let j = j as usize;
                    if j > i && distance2(p, points[j]) <= r2 {
                        graph.link(i, j);
                        for a in [i, j] {
                            if graph.degree(a) > MAX_NEIGHBOURS {
                                return Err(ConfigError::invalid(
                                    field("radius"),
                                    radius,
                                    format!(
                                        "node_{a} would have more than {MAX_NEIGHBOURS} neighbours (use a smaller radius or fewer nodes)"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    connect_components(graph, &points, radius)
}

/// Union-find root of `a`, with path halving.
fn find(parent: &mut [u32], mut a: usize) -> usize {
    while parent[a] as usize != a {
        parent[a] = parent[parent[a] as usize];
        a = parent[a] as usize;
    }
    a
}

/// Joins every component (in order of its smallest node, the first one
/// excepted) to the nearest node outside it by one link, both endpoints
/// under the cap.
fn connect_components(
    graph: &mut Graph,
    points: &[(f64, f64)],
    radius: f64,
) -> Result<(), ConfigError> {
    let n = points.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    for a in 0..n {
        for k in 0..graph.adjacency[a].len() {
            let b = graph.adjacency[a][k] as usize;
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb) as u32;
            }
        }
    }
    // Components in the order of their smallest node: the nodes `a` with
    // `find(a) == a` after unions toward the smaller root.
    let firsts: Vec<usize> = (0..n).filter(|&a| find(&mut parent, a) == a).collect();
    let mut component = vec![0u32; n];
    for (a, slot) in component.iter_mut().enumerate() {
        *slot = find(&mut parent, a) as u32;
    }
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); n];
    for a in 0..n {
        members[component[a] as usize].push(a as u32);
    }
    // From here `parent` tracks the joined sets.
    for &first in firsts.iter().skip(1) {
        let own = find(&mut parent, first);
        let mut best: Option<(f64, usize, usize)> = None;
        for &u in &members[first] {
            let u = u as usize;
            if graph.degree(u) >= MAX_NEIGHBOURS {
                continue;
            }
            for v in 0..n {
                if graph.degree(v) >= MAX_NEIGHBOURS || find(&mut parent, v) == own {
                    continue;
                }
                let d = distance2(points[u], points[v]);
                if best.is_none_or(|(bd, _, _)| d < bd) {
                    best = Some((d, u, v));
                }
            }
        }
        let Some((_, u, v)) = best else {
            return Err(ConfigError::invalid(
                field("radius"),
                radius,
                format!(
                    "the component of node_{first} cannot be joined: every candidate node has {MAX_NEIGHBOURS} neighbours (use a smaller radius)"
                ),
            ));
        };
        graph.link(u, v);
        let (ru, rv) = (find(&mut parent, u), find(&mut parent, v));
        parent[ru.max(rv)] = ru.min(rv) as u32;
    }
    Ok(())
}

/// A Fenwick (binary indexed) tree of non-negative integer weights, for
/// drawing an index with probability proportional to its weight.
struct Fenwick {
    tree: Vec<u64>,
    weights: Vec<u64>,
    total: u64,
}

impl Fenwick {
    fn new(n: usize) -> Self {
        Self {
            tree: vec![0; n + 1],
            weights: vec![0; n],
            total: 0,
        }
    }

    fn set(&mut self, index: usize, weight: u64) {
        let old = self.weights[index];
        self.weights[index] = weight;
        self.total = self.total - old + weight;
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i] - old + weight;
            i += i & i.wrapping_neg();
        }
    }

    /// The index `i` with `prefix(i) <= target < prefix(i + 1)`, where
    /// `prefix(i)` sums the weights below `i` (`target < total`).
    fn search(&self, mut target: u64) -> usize {
        let mut position = 0;
        let mut step = (self.tree.len() - 1).next_power_of_two();
        while step > 0 {
            let next = position + step;
            if next < self.tree.len() && self.tree[next] <= target {
                target -= self.tree[next];
                position = next;
            }
            step >>= 1;
        }
        position
    }
}

/// Preferential attachment under the cap (module docs).
fn barabasi_albert(graph: &mut Graph, m: usize, seed: u64) {
    let n = graph.adjacency.len();
    let mut rng = seeded(seed);
    // Weight of a node: its degree while under the cap, else 0.
    let weight = |degree: usize| {
        if degree < MAX_NEIGHBOURS {
            degree as u64
        } else {
            0
        }
    };
    let mut weights = Fenwick::new(n);
    for a in 0..=m {
        for b in a + 1..=m {
            graph.link(a, b);
        }
    }
    for a in 0..=m {
        weights.set(a, weight(graph.degree(a)));
    }
    let mut targets = Vec::with_capacity(m);
    for new in m + 1..n {
        targets.clear();
        for _ in 0..m {
            // The total stays below 2³²: at most 10 000 nodes × 62.
            let target = weights.search(u64::from(below(&mut rng, weights.total as u32)));
            targets.push(target);
            // Drawn without replacement: out of the next draws.
            weights.set(target, 0);
        }
        for &target in &targets {
            graph.link(new, target);
            weights.set(target, weight(graph.degree(target)));
        }
        weights.set(new, weight(graph.degree(new)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    /// Checks what every generated graph must be and returns its degrees:
    /// `n` nodes named in order, symmetric, no self or duplicate links,
    /// connected, degrees within the cap; the lines read back (through the
    /// topology parser) to the same graph.
    fn check_graph(generator: &NetworkGenerator, n: usize) -> Vec<usize> {
        let adjacency = generator.adjacency().unwrap();
        assert_eq!(adjacency.len(), n, "{generator:?}");
        for (a, row) in adjacency.iter().enumerate() {
            assert!(row.windows(2).all(|w| w[0] < w[1]), "node {a}: {row:?}");
            assert!(
                row.len() <= MAX_NEIGHBOURS,
                "node {a}: degree {}",
                row.len()
            );
            for &b in row {
                assert_ne!(b as usize, a, "self link at {a}");
                assert!(
                    adjacency[b as usize].binary_search(&(a as u32)).is_ok(),
                    "{a} -> {b} not symmetric"
                );
            }
        }
        let mut seen = vec![false; n];
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(a) = stack.pop() {
            for &b in &adjacency[a] {
                if !core::mem::replace(&mut seen[b as usize], true) {
                    stack.push(b as usize);
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "{generator:?}: not connected");
        let lines = generator.lines().unwrap();
        let topology = Topology::from_adjacency_lines(&lines).unwrap();
        assert_eq!(topology.num_agents(), n);
        for (a, row) in adjacency.iter().enumerate() {
            assert_eq!(topology.names()[a], format!("node_{a}"));
            assert_eq!(topology.neighbours(a), &row[..], "node {a}");
        }
        adjacency.iter().map(Vec::len).collect()
    }

    fn field_of(result: Result<Vec<String>, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn ring_lines_and_degrees_by_hand() {
        let ring = NetworkGenerator::Ring { nodes: 4 };
        assert_eq!(
            ring.lines().unwrap(),
            [
                "node_0",
                "node_1 node_0",
                "node_2 node_1",
                "node_3 node_0 node_2"
            ]
        );
        assert_eq!(check_graph(&ring, 4), [2, 2, 2, 2]);
        let pair = NetworkGenerator::Ring { nodes: 2 };
        assert_eq!(pair.lines().unwrap(), ["node_0", "node_1 node_0"]);
        assert_eq!(check_graph(&NetworkGenerator::Ring { nodes: 3 }, 3), [2; 3]);
        assert_eq!(
            check_graph(&NetworkGenerator::Ring { nodes: 1000 }, 1000),
            [2; 1000]
        );
    }

    #[test]
    fn a_union_is_its_parts_side_by_side_by_hand() {
        use NetworkGenerator as G;
        let union = G::Union {
            parts: vec![G::Ring { nodes: 3 }, G::Grid { rows: 1, cols: 2 }],
        };
        assert_eq!(union.num_nodes().unwrap(), 5);
        assert_eq!(
            union.lines().unwrap(),
            [
                "node_0",
                "node_1 node_0",
                "node_2 node_0 node_1",
                "node_3",
                "node_4 node_3"
            ]
        );
        assert_eq!(union.adjacency().unwrap()[4], [3]);
        let topology = Topology::from_adjacency_lines(&union.lines().unwrap()).unwrap();
        assert_eq!(topology.neighbours(3), [4]);
        assert_eq!(topology.neighbours(0), [1, 2]);
        // A part's error names the part; one part, or a union in a union, is refused.
        let bad = G::Union {
            parts: vec![G::Ring { nodes: 3 }, G::Ring { nodes: 1 }],
        };
        assert_eq!(field_of(bad.lines()), "network_generator.parts[1].nodes");
        let single = G::Union {
            parts: vec![G::Ring { nodes: 3 }],
        };
        assert_eq!(field_of(single.lines()), "network_generator.parts");
        let nested = G::Union {
            parts: vec![G::Ring { nodes: 3 }, union.clone()],
        };
        assert_eq!(field_of(nested.lines()), "network_generator.parts[1].kind");
    }

    #[test]
    fn grid_lines_and_degrees_by_hand() {
        // 0 1 2
        // 3 4 5
        let grid = NetworkGenerator::Grid { rows: 2, cols: 3 };
        assert_eq!(
            grid.lines().unwrap(),
            [
                "node_0",
                "node_1 node_0",
                "node_2 node_1",
                "node_3 node_0",
                "node_4 node_1 node_3",
                "node_5 node_2 node_4"
            ]
        );
        assert_eq!(check_graph(&grid, 6), [2, 3, 2, 2, 3, 2]);
        // 4 × 4: corners 2, border 3, the 4 interior nodes 4.
        let degrees = check_graph(&NetworkGenerator::Grid { rows: 4, cols: 4 }, 16);
        assert_eq!(degrees, [2, 3, 3, 2, 3, 4, 4, 3, 3, 4, 4, 3, 2, 3, 3, 2]);
        // One row is a path.
        assert_eq!(
            check_graph(&NetworkGenerator::Grid { rows: 1, cols: 4 }, 4),
            [1, 2, 2, 1]
        );
    }

    #[test]
    fn star_of_stars_by_hand() {
        let star = NetworkGenerator::StarOfStars {
            hubs: 3,
            leaves_per_hub: 2,
            hub_links: HubLinks::Mesh,
        };
        let degrees = check_graph(&star, 9);
        assert_eq!(degrees, [4, 4, 4, 1, 1, 1, 1, 1, 1]);
        let lines = star.lines().unwrap();
        assert_eq!(lines[3], "node_3 node_0");
        assert_eq!(lines[5], "node_5 node_1");
        let ring = NetworkGenerator::StarOfStars {
            hubs: 100,
            leaves_per_hub: 60,
            hub_links: HubLinks::Ring,
        };
        let degrees = check_graph(&ring, 6100);
        assert!(degrees[..100].iter().all(|&d| d == 62));
        assert!(degrees[100..].iter().all(|&d| d == 1));
        // One hub: a star.
        let single = NetworkGenerator::StarOfStars {
            hubs: 1,
            leaves_per_hub: 5,
            hub_links: HubLinks::Ring,
        };
        assert_eq!(check_graph(&single, 6), [5, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn random_kinds_are_valid_and_deterministic_in_their_seed() {
        let geometric = |nodes, radius, seed| NetworkGenerator::RandomGeometric {
            nodes,
            radius,
            seed,
        };
        let attachment = |nodes, m, seed| NetworkGenerator::BarabasiAlbert { nodes, m, seed };
        for (a, b) in [
            (geometric(20, 0.3, 1), geometric(20, 0.3, 2)),
            (geometric(1000, 0.04, 7), geometric(1000, 0.04, 8)),
            (geometric(300, 0.001, 3), geometric(300, 0.001, 4)),
            (attachment(20, 2, 1), attachment(20, 2, 2)),
            (attachment(1000, 3, 7), attachment(1000, 3, 8)),
            (attachment(3000, 31, 5), attachment(3000, 31, 6)),
        ] {
            let n = a.num_nodes().unwrap();
            check_graph(&a, n);
            check_graph(&b, n);
            assert_eq!(a.lines().unwrap(), a.clone().lines().unwrap());
            assert_ne!(a.lines().unwrap(), b.lines().unwrap(), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn barabasi_albert_caps_hubs_and_keeps_m_links_per_new_node() {
        // m = 31 and many nodes: without the cap, early nodes would far
        // exceed 62 neighbours.
        let generator = NetworkGenerator::BarabasiAlbert {
            nodes: 2000,
            m: 31,
            seed: 9,
        };
        let adjacency = generator.adjacency().unwrap();
        let at_cap = adjacency
            .iter()
            .filter(|r| r.len() == MAX_NEIGHBOURS)
            .count();
        assert!(at_cap > 100, "only {at_cap} nodes at the cap");
        // Links: the mesh of m + 1 nodes, then m per new node.
        let links: usize = adjacency.iter().map(Vec::len).sum::<usize>() / 2;
        assert_eq!(links, 31 * 32 / 2 + 31 * (2000 - 32));
        for (i, row) in adjacency.iter().enumerate().skip(32) {
            let earlier = row.iter().filter(|&&j| (j as usize) < i).count();
            assert_eq!(earlier, 31, "node {i}");
        }
        // Preferential: the oldest nodes gather more links than the newest.
        let small = NetworkGenerator::BarabasiAlbert {
            nodes: 1000,
            m: 2,
            seed: 3,
        }
        .adjacency()
        .unwrap();
        let old: usize = small[..10].iter().map(Vec::len).sum();
        let new: usize = small[990..].iter().map(Vec::len).sum();
        assert!(old > 3 * new, "old {old}, new {new}");
    }

    #[test]
    fn random_geometric_links_exactly_the_close_pairs_plus_joins() {
        let generator = NetworkGenerator::RandomGeometric {
            nodes: 200,
            radius: 0.08,
            seed: 11,
        };
        let adjacency = generator.adjacency().unwrap();
        let mut rng = seeded(11);
        let points: Vec<(f64, f64)> = (0..200)
            .map(|_| {
                let x = uniform01(&mut rng);
                (x, uniform01(&mut rng))
            })
            .collect();
        let mut close = 0;
        let mut parent: Vec<u32> = (0..200).collect();
        for i in 0..200 {
            for j in i + 1..200 {
                let d = libm::sqrt(distance2(points[i], points[j]));
                if d <= 0.08 {
                    close += 1;
                    assert!(
                        adjacency[i].contains(&(j as u32)),
                        "{i}-{j} at {d} not linked"
                    );
                    let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                    parent[ri.max(rj)] = ri.min(rj) as u32;
                }
            }
        }
        // Exactly one extra link per component but the first.
        let components = (0..200).filter(|&a| find(&mut parent, a) == a).count();
        assert!(
            components > 1,
            "radius 0.08 on 200 points should need joins"
        );
        let links: usize = adjacency.iter().map(Vec::len).sum::<usize>() / 2;
        assert_eq!(links, close + components - 1);
        check_graph(&generator, 200);
    }

    #[test]
    fn bad_parameters_are_errors_naming_the_field() {
        use NetworkGenerator as G;
        let cases: [(G, &str); 14] = [
            (G::Ring { nodes: 1 }, "network_generator.nodes"),
            (G::Ring { nodes: -3 }, "network_generator.nodes"),
            (G::Ring { nodes: 10_001 }, "network_generator.nodes"),
            (G::Grid { rows: 0, cols: 5 }, "network_generator.rows"),
            (G::Grid { rows: 1, cols: 1 }, "network_generator.rows"),
            (
                G::Grid {
                    rows: 200,
                    cols: 200,
                },
                "network_generator.rows",
            ),
            (
                G::RandomGeometric {
                    nodes: 10,
                    radius: f64::NAN,
                    seed: 0,
                },
                "network_generator.radius",
            ),
            (
                G::RandomGeometric {
                    nodes: 10,
                    radius: -0.1,
                    seed: 0,
                },
                "network_generator.radius",
            ),
            // Too dense: a node over the cap is refused.
            (
                G::RandomGeometric {
                    nodes: 1000,
                    radius: 0.5,
                    seed: 0,
                },
                "network_generator.radius",
            ),
            (
                G::BarabasiAlbert {
                    nodes: 10,
                    m: 0,
                    seed: 0,
                },
                "network_generator.m",
            ),
            (
                G::BarabasiAlbert {
                    nodes: 100,
                    m: 32,
                    seed: 0,
                },
                "network_generator.m",
            ),
            (
                G::BarabasiAlbert {
                    nodes: 5,
                    m: 5,
                    seed: 0,
                },
                "network_generator.m",
            ),
            (
                G::StarOfStars {
                    hubs: 10,
                    leaves_per_hub: 54,
                    hub_links: HubLinks::Mesh,
                },
                "network_generator.leaves_per_hub",
            ),
            (
                G::StarOfStars {
                    hubs: 1,
                    leaves_per_hub: 0,
                    hub_links: HubLinks::Mesh,
                },
                "network_generator.hubs",
            ),
        ];
        for (generator, expected) in cases {
            assert_eq!(field_of(generator.lines()), expected, "{generator:?}");
        }
        let message = G::RandomGeometric {
            nodes: 1000,
            radius: 0.5,
            seed: 0,
        }
        .lines()
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("0.5") && message.contains("62"),
            "{message}"
        );
        // At the limits: accepted.
        G::StarOfStars {
            hubs: 10,
            leaves_per_hub: 53,
            hub_links: HubLinks::Mesh,
        }
        .lines()
        .unwrap();
        assert_eq!(G::Ring { nodes: 10_000 }.lines().unwrap().len(), 10_000);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        /// Any valid parameters: a connected, symmetric graph of the
        /// announced size within the cap, whose lines parse back to it.
        #[test]
        fn every_generator_gives_a_valid_graph(
            kind in 0usize..5,
            a in 2i64..120,
            b in 1i64..40,
            radius in 0.001f64..0.3,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let generator = match kind {
                0 => NetworkGenerator::Ring { nodes: a },
                1 => NetworkGenerator::Grid { rows: a / 4 + 1, cols: b },
                2 => NetworkGenerator::RandomGeometric { nodes: a, radius, seed },
                3 => NetworkGenerator::BarabasiAlbert { nodes: a, m: (b % 31).min(a - 1).max(1), seed },
                _ => NetworkGenerator::StarOfStars {
                    hubs: b % 20 + 1,
                    leaves_per_hub: a % 40,
                    hub_links: if seed % 2 == 0 { HubLinks::Mesh } else { HubLinks::Ring },
                },
            };
            match generator.num_nodes() {
                Ok(n) => {
                    // Dense geometric graphs may be refused; nothing else is.
                    match generator.adjacency() {
                        Ok(_) => { check_graph(&generator, n); }
                        Err(e) => {
                            proptest::prop_assert!(kind == 2, "{generator:?}: {e}");
                            proptest::prop_assert_eq!(e.field(), Some("network_generator.radius"));
                        }
                    }
                }
                Err(e) => {
                    // Only star_of_stars over the cap or too small.
                    proptest::prop_assert!(kind == 4 || kind == 1, "{generator:?}: {e}");
                }
            }
        }
    }
}
