//! Network topology: agents, neighbours and links, read from adjacency lines.
//!
//! The order rules (spec §1) matter for every per-neighbour list:
//! * **agent order** is the order of first appearance of a name;
//! * **neighbour order** of a node is the order in which its links were
//!   first created while reading the lines;
//! * **link order** visits agents in agent order and, for each, its
//!   neighbours in neighbour order, listing a link the first time it is met.
//!
//! Neighbours are stored in CSR form: the neighbours of agent `a` are
//! `neighbours[offsets[a]..offsets[a + 1]]`; position `s` in that array is
//! called a *slot* (one directed half of a link).

use crate::alloc_prelude::*;
use crate::error::ConfigError;

/// An undirected graph of named nodes in CSR form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    names: Vec<String>,
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
    /// For every slot, the index of its link in link order.
    slot_link: Vec<u32>,
    /// Links in link order, as `(first, second)` agent indices: `first` is
    /// the agent from which the link is met first in link order.
    links: Vec<(u32, u32)>,
}

impl Topology {
    /// Parses adjacency lines: `"node_0 node_1 node_2"` links node_0 to
    /// node_1 and node_2; a line with one name declares that node; `#`
    /// starts a comment; a link written twice is one link.
    ///
    /// # Errors
    /// [`ConfigError`] when no node is declared or a node is linked to itself.
    pub fn from_adjacency_lines<S: AsRef<str>>(lines: &[S]) -> Result<Self, ConfigError> {
        let mut names: Vec<String> = Vec::new();
        let mut adjacency: Vec<Vec<u32>> = Vec::new();
        fn index_of(name: &str, names: &mut Vec<String>, adjacency: &mut Vec<Vec<u32>>) -> u32 {
            if let Some(i) = names.iter().position(|n| n == name) {
                return i as u32;
            }
            names.push(name.to_string());
            adjacency.push(Vec::new());
            (names.len() - 1) as u32
        }
        for (line_no, line) in lines.iter().enumerate() {
            let line = line.as_ref();
            let content = line.split('#').next().unwrap_or("");
            let mut tokens = content.split_whitespace();
            let Some(head) = tokens.next() else { continue };
            let u = index_of(head, &mut names, &mut adjacency);
            for other in tokens {
                let v = index_of(other, &mut names, &mut adjacency);
                if u == v {
                    return Err(ConfigError::invalid(
                        format!("network[{line_no}]"),
                        line,
                        "a node cannot be linked to itself",
                    ));
                }
                if !adjacency[u as usize].contains(&v) {
                    adjacency[u as usize].push(v);
                    adjacency[v as usize].push(u);
                }
            }
        }
        if names.is_empty() {
            return Err(ConfigError::invalid(
                "network",
                "[]",
                "must declare at least one node",
            ));
        }
        let mut offsets = Vec::with_capacity(names.len() + 1);
        let mut neighbours = Vec::new();
        offsets.push(0);
        for adj in &adjacency {
            neighbours.extend_from_slice(adj);
            offsets.push(neighbours.len() as u32);
        }
        let mut links: Vec<(u32, u32)> = Vec::new();
        let mut slot_link = vec![0u32; neighbours.len()];
        for a in 0..names.len() as u32 {
            for s in offsets[a as usize] as usize..offsets[a as usize + 1] as usize {
                let b = neighbours[s];
                let existing = links.iter().position(|&(x, y)| (x, y) == (b, a));
                slot_link[s] = match existing {
                    Some(l) => l as u32,
                    None => {
                        links.push((a, b));
                        (links.len() - 1) as u32
                    }
                };
            }
        }
        Ok(Self {
            names,
            offsets,
            neighbours,
            slot_link,
            links,
        })
    }

    /// Number of agents (nodes).
    #[must_use]
    pub fn num_agents(&self) -> usize {
        self.names.len()
    }

    /// Agent names in agent order.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Index of the agent called `name`, if any.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Neighbours of agent `a`, in neighbour order.
    #[must_use]
    pub fn neighbours(&self, a: usize) -> &[u32] {
        &self.neighbours[self.offsets[a] as usize..self.offsets[a + 1] as usize]
    }

    /// Number of neighbours of agent `a`.
    #[must_use]
    pub fn degree(&self, a: usize) -> usize {
        (self.offsets[a + 1] - self.offsets[a]) as usize
    }

    /// Largest degree over all agents (0 for a graph without links).
    #[must_use]
    pub fn max_degree(&self) -> usize {
        (0..self.num_agents())
            .map(|a| self.degree(a))
            .max()
            .unwrap_or(0)
    }

    /// CSR offsets (`num_agents + 1` entries).
    #[must_use]
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Link index of every slot.
    #[must_use]
    pub fn slot_links(&self) -> &[u32] {
        &self.slot_link
    }

    /// Links in link order as `(first, second)` agent indices.
    #[must_use]
    pub fn links(&self) -> &[(u32, u32)] {
        &self.links
    }

    /// Number of links.
    #[must_use]
    pub fn num_links(&self) -> usize {
        self.links.len()
    }

    /// Index of the link between agents `a` and `b`, if they are linked.
    #[must_use]
    pub fn link_between(&self, a: usize, b: usize) -> Option<usize> {
        let start = self.offsets[a] as usize;
        self.neighbours(a)
            .iter()
            .position(|&n| n as usize == b)
            .map(|i| self.slot_link[start + i] as usize)
    }

    /// Nodes that are a neighbour of at least one agent, in agent order.
    #[must_use]
    pub fn nodes_with_neighbours(&self) -> Vec<usize> {
        (0..self.num_agents())
            .filter(|&a| self.degree(a) > 0)
            .collect()
    }

    /// The connected component of each agent, numbered `0..` in the order
    /// of each component's first agent (so agent 0 is in component 0; a
    /// connected federation is all 0).
    #[must_use]
    pub fn components(&self) -> Vec<u32> {
        const UNSEEN: u32 = u32::MAX;
        let mut component = vec![UNSEEN; self.num_agents()];
        let mut next = 0;
        let mut stack = Vec::new();
        for start in 0..self.num_agents() {
            if component[start] != UNSEEN {
                continue;
            }
            component[start] = next;
            stack.push(start);
            while let Some(a) = stack.pop() {
                for &b in self.neighbours(a) {
                    if component[b as usize] == UNSEEN {
                        component[b as usize] = next;
                        stack.push(b as usize);
                    }
                }
            }
            next += 1;
        }
        component
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_by_hand() {
        let t = Topology::from_adjacency_lines(&[
            "node_0 node_3",
            "node_1 node_2",
            "node_4",
            "node_3 node_5",
        ])
        .unwrap();
        // Agents in order of first appearance: 0, 3, 1, 2, 4, 5.
        assert_eq!(t.components(), [0, 0, 1, 1, 2, 0]);
        let ring = Topology::from_adjacency_lines(&["a b", "b c", "c a"]).unwrap();
        assert_eq!(ring.components(), [0, 0, 0]);
    }

    #[test]
    fn orders_follow_first_appearance() {
        let t = Topology::from_adjacency_lines(&["node_0 node_1 node_2", "node_1 node_2"]).unwrap();
        assert_eq!(t.names(), ["node_0", "node_1", "node_2"]);
        assert_eq!(t.neighbours(0), [1, 2]);
        assert_eq!(t.neighbours(1), [0, 2]);
        assert_eq!(t.neighbours(2), [0, 1]);
    }

    #[test]
    fn five_node_link_order_matches_spec() {
        let t = Topology::from_adjacency_lines(&[
            "node_0 node_1 node_2",
            "node_3 node_2 node_0",
            "node_1 node_4",
        ])
        .unwrap();
        let named: Vec<(&str, &str)> = t
            .links()
            .iter()
            .map(|&(a, b)| {
                (
                    t.names()[a as usize].as_str(),
                    t.names()[b as usize].as_str(),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("node_0", "node_1"),
                ("node_0", "node_2"),
                ("node_0", "node_3"),
                ("node_1", "node_4"),
                ("node_2", "node_3")
            ]
        );
        // node_0's neighbours: node_1, node_2 (line 1), then node_3 (line 2).
        assert_eq!(t.neighbours(0), [1, 2, 3]);
    }

    #[test]
    fn isolated_nodes_comments_and_duplicates() {
        let t = Topology::from_adjacency_lines(&["a b # comment c", "c", "b a"]).unwrap();
        assert_eq!(t.names(), ["a", "b", "c"]);
        assert_eq!(t.num_links(), 1);
        assert_eq!(t.degree(2), 0);
        assert_eq!(t.link_between(1, 0), Some(0));
    }

    #[test]
    fn self_loop_and_empty_network_are_errors() {
        assert!(Topology::from_adjacency_lines(&["a a"]).is_err());
        assert!(Topology::from_adjacency_lines::<&str>(&[]).is_err());
        assert!(Topology::from_adjacency_lines(&["# only a comment"]).is_err());
    }
}
