//! What a node learns from its neighbours by gossip: each neighbour's
//! previous input rate, capacity and degree, and the node's own capacity —
//! what the DFaaS platform's agents exchange and its Recalc and
//! Node-Margin strategies read (`../shared/spec/PLATFORM_STRATEGIES.md`).
//! The reference's agents do not see it; the agnostic layout reads it
//! when trained with [`crate::ppo::PpoConfig::gossip`]
//! ([`dfaas_infer::agnostic::gossip_rows`] has the layout of the values).

use dfaas_core::EnvModel;
use dfaas_infer::agnostic::gossip_len;

/// Largest total a node's table serves with no reject (requests per step).
#[must_use]
pub fn capacity(model: &EnvModel, node: usize) -> u32 {
    let rejects = model.perf_table(node).rejects();
    rejects
        .iter()
        .position(|&r| r > 0)
        .map_or(rejects.len() - 1, |first| first.saturating_sub(1)) as u32
}

/// Every node's [`capacity`], computed once per model: the source of
/// each node's gossip.
#[derive(Debug, Clone, PartialEq)]
pub struct Gossip {
    capacities: Vec<u32>,
}

impl Gossip {
    /// The gossip source of `model`'s nodes.
    #[must_use]
    pub fn new(model: &EnvModel) -> Self {
        Self {
            capacities: (0..model.num_agents())
                .map(|a| capacity(model, a))
                .collect(),
        }
    }

    /// Every node's capacity, in agent order.
    #[must_use]
    pub fn capacities(&self) -> &[u32] {
        &self.capacities
    }

    /// Writes node `a`'s gossip (`[C_a, λ_j, C_j, k_j for each neighbour
    /// j]`, `gossip_len(k)` values; `λ_j` the `prev_input_rate` of `j`'s
    /// observation) into `out`, resized to fit, from one env's
    /// `observations` (`[agent][obs_width]` of `model`, checked by the
    /// caller).
    pub fn write(&self, model: &EnvModel, observations: &[f32], a: usize, out: &mut Vec<f32>) {
        let ow = model.obs_width();
        let neighbours = model.built().topology().neighbours(a);
        out.clear();
        out.reserve(gossip_len(neighbours.len()));
        out.push(self.capacities[a] as f32);
        for &j in neighbours {
            let j = j as usize;
            out.extend([
                observations[j * ow + 1],
                self.capacities[j] as f32,
                model.degree(j) as f32,
            ]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dfaas_core::EnvConfig;

    /// The default scenario's triangle (`node_0 node_1 node_2`), every node
    /// of capacity 22.
    pub(crate) fn model() -> EnvModel {
        let config = EnvConfig {
            request_memory_mb: Some(516),
            warm_service_time: Some(0.137),
            cold_service_time: Some(0.513),
            ..EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
        };
        EnvModel::new(&config.build().unwrap()).unwrap()
    }

    #[test]
    fn capacity_is_the_last_load_without_rejects() {
        let m = model();
        let c = capacity(&m, 0);
        assert_eq!(m.perf_table(0).rejects()[c as usize], 0);
        assert!(m.perf_table(0).rejects()[c as usize + 1] > 0);
        // Spec §7: Tw 0.137 s, M 7 first rejects at 23 requests.
        assert_eq!(c, 22);
    }

    #[test]
    fn gossip_of_a_node_reads_its_neighbours_previous_rates() {
        let model = model();
        let ow = model.obs_width();
        // Every agent's row: [input_rate, prev_input_rate, …].
        let mut obs = vec![0f32; 3 * ow];
        for (a, prev) in [11.0, 12.0, 13.0].into_iter().enumerate() {
            obs[a * ow] = 100.0;
            obs[a * ow + 1] = prev;
        }
        let gossip = Gossip::new(&model);
        // Spec §7: Tw 0.137 s, M 7 first rejects at 23 requests.
        assert_eq!(gossip.capacities(), &[22, 22, 22]);
        let mut out = vec![9.0; 1];
        gossip.write(&model, &obs, 1, &mut out);
        let neighbours = model.built().topology().neighbours(1);
        assert_eq!(neighbours, &[0, 2]);
        assert_eq!(out, [22.0, 11.0, 22.0, 2.0, 13.0, 22.0, 2.0]);
    }
}
