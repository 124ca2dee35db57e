//! Steps 1–5 of [`LANES`] envs at once, each value of the step held as
//! one lane of an `f32x8` / `i32x8` (the `wide` crate: SSE2, AVX, NEON or
//! wasm SIMD, whichever the build targets), so that the split, the reject
//! distribution and the rewards run as straight-line SIMD with no branch
//! that depends on the data. Actions come in and observations and rewards
//! go out through 4×4 transposes ([`gather_lanes`], [`scatter_lanes`]).
//!
//! It is the fast path of [`crate::BatchEnv`]'s step (with or without the
//! per-step metrics, which are recorded from its lanes) and gives, bit for
//! bit, what the per-env step ([`crate::split`], [`crate::resolve`])
//! gives, which stays the definition (and the path of the reference's
//! reject arithmetic, the served reward and nodes of more than
//! [`MAX_DEGREE`] neighbours). The tests compare the two, metrics
//! included, on random and off-simplex actions.
//!
//! Two facts make it branch-free:
//! * the largest-remainder rule gives one more to entry `j` exactly when
//!   fewer than `extra` entries precede it in stable descending order,
//!   `Σ_{i<j} [f_i ≥ f_j] + Σ_{i>j} [f_i > f_j]`: a rank from
//!   comparisons instead of repeated selections;
//! * a node's zero forwards may stay in its incoming list: under the exact
//!   rule an entry of 0 gets a share of 0 and a remainder of 0, and is
//!   never raised (more than `extra` remainders are positive), so each
//!   node's list has the same length in every env.
//!
//! A lane whose split is off the simplex's common case (truncated products
//! summing above the rate, or a remainder of at least the entry count) is
//! split again by the per-env rule. Node totals below 4096 (all of them at
//! the reference's rates) divide exactly in f32 ([`small_share`]); larger
//! ones lane by lane in integers.

use crate::RejectArithmetic;
use crate::alloc_prelude::*;
use crate::model::EnvModel;
use crate::reward::RewardKind;
use crate::split::split_finite;
use wide::{f32x4, f32x8, i32x8};

/// Envs stepped together.
pub(crate) const LANES: usize = 8;

/// Largest degree the lane step handles (an agent's action then has at
/// most 8 entries, a node's list at most 7).
pub(crate) const MAX_DEGREE: usize = 6;

/// Totals below this take the f32 shares (`T² + T < 2²⁴`).
const SMALL_TOTAL: i32 = 4096;

/// Whether the lane step computes `model`'s plain step (exact reject
/// arithmetic, the reference reward, degrees up to [`MAX_DEGREE`]).
pub(crate) fn applies(model: &EnvModel) -> bool {
    model.reject_arithmetic == RejectArithmetic::Exact
        && model.reward == RewardKind::Reference
        && model.degrees.iter().all(|&k| k <= MAX_DEGREE)
}

/// The lane step's values, `[agent][action_width]` (padding 0). Every
/// count is at most `MAX_INPUT_RATE` < 2³¹, so lanes hold them as i32.
#[derive(Debug, Clone)]
pub(crate) struct LaneStep {
    /// The actions `[agent][action_width]` as lanes (padding as given).
    actions: Vec<f32x8>,
    /// Split counts.
    pub(crate) counts: Vec<i32x8>,
    /// Rejects: entry 0 of the local requests at the agent's node, entry
    /// `j` of its forward to neighbour `j` there.
    pub(crate) rejects: Vec<i32x8>,
    /// Each agent's reward, `[agent]`.
    pub(crate) rewards: Vec<f32x8>,
    /// Scratch of one agent's split: fractional parts per entry.
    fractions: Vec<f32x8>,
    /// Scratch of one node's distribution: shares and remainders per entry.
    shares: Vec<i32x8>,
    remainders: Vec<i32x8>,
}

impl LaneStep {
    pub(crate) fn new(model: &EnvModel) -> Self {
        let slots = model.num_agents * model.action_width;
        Self {
            actions: vec![f32x8::ZERO; slots],
            counts: vec![i32x8::ZERO; slots],
            rejects: vec![i32x8::ZERO; slots],
            rewards: vec![f32x8::ZERO; model.num_agents],
            fractions: vec![f32x8::ZERO; MAX_DEGREE + 2],
            shares: vec![i32x8::ZERO; MAX_DEGREE + 1],
            remainders: vec![i32x8::ZERO; MAX_DEGREE + 1],
        }
    }

    /// Steps 1–5 of `LANES` envs of `model` (one it [`applies`] to) with
    /// their actions `[lane][agent][action_width]` (finite) and input rates
    /// `rates[agent]` (at most the model's largest).
    pub(crate) fn step(&mut self, model: &EnvModel, actions: &[f32], rates: &[i32x8]) {
        let (n, w) = (model.num_agents, model.action_width);
        gather_lanes(actions, n * w, &mut self.actions);
        for (a, &rate) in rates.iter().enumerate() {
            self.split(model, a, &actions[a * w..], rate);
        }
        for node in 0..n {
            self.resolve_node(model, node);
        }
        for (a, &rate) in rates.iter().enumerate() {
            let k = model.degrees[a];
            let row = &self.counts[a * w..a * w + k + 2];
            let lost = &self.rejects[a * w..a * w + k + 1];
            let mut served = -row[k + 1];
            for (&c, &r) in row[..=k].iter().zip(lost) {
                served += c - r;
            }
            // Both exact in f32 (below 2²⁴); IEEE division as the scalar.
            let reward = served.round_float() / rate.round_float();
            // 0 where the rate is 0.
            let positive: f32x8 = bytemuck::cast(!rate.simd_eq(i32x8::ZERO));
            self.rewards[a] = reward & positive;
        }
    }

    /// Splits agent `a`'s `rate` by its actions (`actions[l·n·w + j]` the
    /// entry `j` of lane `l`).
    // Out of line, as `resolve_node`: inlined into the step, they spill
    // more registers than the call costs.
    #[inline(never)]
    fn split(&mut self, model: &EnvModel, a: usize, actions: &[f32], rate: i32x8) {
        let (n, w) = (model.num_agents, model.action_width);
        let m = model.degrees[a] + 2;
        let r = rate.round_float();
        let fractions = &mut self.fractions[..m];
        let counts = &mut self.counts[a * w..a * w + m];
        let mut assigned = i32x8::ZERO;
        let entries = &self.actions[a * w..a * w + m];
        for ((count, fraction), &p) in counts.iter_mut().zip(fractions.iter_mut()).zip(entries) {
            // Entries are finite (checked): the clamp needs no NaN
            // handling. 0 <= p·r <= r < 2³¹: truncation needs no range
            // fix-up, and is the scalar `as u32`. (A −0 clamps to ±0, whose
            // count and fraction rank as 0's.)
            let product = p.fast_max(f32x8::ZERO).fast_min(f32x8::ONE) * r;
            let whole = product.fast_trunc_int();
            *fraction = product - whole.round_float();
            *count = whole;
            assigned += whole;
        }
        // What is left to hand out; a lane off the common case (below 0 or
        // at least m) is split again by the per-env rule and hands out
        // nothing here.
        let left = rate - assigned;
        let common = !left.simd_lt(i32x8::ZERO) & left.simd_lt(i32x8::splat(m as i32));
        if !common.all() {
            let common = common.to_array();
            let rate = rate.to_array();
            for l in (0..LANES).filter(|&l| common[l] == 0) {
                let mut lane_counts = [0u32; MAX_DEGREE + 2];
                let mut lane_fractions = [0f32; MAX_DEGREE + 2];
                split_finite(
                    &actions[l * n * w..l * n * w + m],
                    rate[l] as u32,
                    &mut lane_counts[..m],
                    &mut lane_fractions[..m],
                );
                for (count, &c) in counts.iter_mut().zip(&lane_counts) {
                    count.as_mut_array()[l] = c as i32;
                }
            }
        }
        raise_ranked(fractions, left & common, counts);
    }

    /// A node's incoming list (its local count, then the forwards it
    /// receives, zeros included), its rejects from the performance table
    /// and their exact distribution over the list.
    #[inline(never)]
    fn resolve_node(&mut self, model: &EnvModel, node: usize) {
        let w = model.action_width;
        let mut slots = [0usize; MAX_DEGREE + 1];
        slots[0] = node * w;
        let edges = model.in_offsets[node]..model.in_offsets[node + 1];
        let len = 1 + edges.len();
        for (slot, e) in slots[1..].iter_mut().zip(edges) {
            *slot = model.in_senders[e] * w + model.in_action_index[e];
        }
        let slots = &slots[..len];
        let mut total = i32x8::ZERO;
        for &slot in slots {
            total += self.counts[slot];
        }
        let table = model.tables[model.table_of[node]].rejects();
        let total_lanes = total.to_array();
        let rejects: [i32; LANES] = core::array::from_fn(|l| table[total_lanes[l] as usize] as i32);
        // Shares ⌊entry·Q / T⌋ and remainders entry·Q mod T (below T <=
        // 2²⁰·(1 + degree) < 2³¹).
        let rejects = i32x8::new(rejects);
        let shares = &mut self.shares[..len];
        let remainders = &mut self.remainders[..len];
        let mut given = i32x8::ZERO;
        if total.simd_lt(i32x8::splat(SMALL_TOTAL)).all() {
            // In f32, exact: entry·Q <= T² < 2²⁴, and the quotient rounded
            // to f32 truncates to the integer quotient since T·(⌊entry·Q/T⌋
            // + 1) <= T² + T < 2²⁴. No rejects: every product 0 (a total
            // of 0 divides as 1).
            let q = rejects.round_float();
            let t = total.max(i32x8::splat(1)).round_float();
            for ((share, remainder), &slot) in
                shares.iter_mut().zip(remainders.iter_mut()).zip(slots)
            {
                (*share, *remainder) = small_share(self.counts[slot], q, t);
                given += *share;
            }
        } else {
            let (q, t) = (rejects.to_array(), total_lanes);
            shares.fill(i32x8::ZERO);
            remainders.fill(i32x8::ZERO);
            for ((share, remainder), &slot) in
                shares.iter_mut().zip(remainders.iter_mut()).zip(slots)
            {
                let entry = self.counts[slot].to_array();
                let (share, remainder) = (share.as_mut_array(), remainder.as_mut_array());
                for l in (0..LANES).filter(|&l| q[l] > 0) {
                    let (q, t) = (u64::from(q[l] as u32), u64::from(t[l] as u32));
                    let product = u64::from(entry[l] as u32) * q;
                    let whole = product / t;
                    share[l] = whole as i32;
                    remainder[l] = (product - whole * t) as i32;
                }
            }
            for share in shares.iter() {
                given += *share;
            }
        }
        let extra = rejects - given;
        raise_ranked(remainders, extra, shares);
        for (&share, &slot) in shares.iter().zip(slots) {
            self.rejects[slot] = share;
        }
    }
}

/// Writes `out[l·stride + i] = lanes[i][l]` for every lane `l` and `i <
/// lanes.len() <= stride` (`out` holds `LANES` rows of `stride`): lanes
/// back to env-major rows, by 4×4 transposes.
pub(crate) fn scatter_lanes(lanes: &[f32x8], out: &mut [f32], stride: usize) {
    let mut rows = out.chunks_exact_mut(stride);
    let mut rows: [&mut [f32]; LANES] = core::array::from_fn(|_| rows.next().unwrap_or(&mut []));
    let whole = lanes.len() / 4 * 4;
    for (g, group) in lanes[..whole].chunks_exact(4).enumerate() {
        let quad: [[f32x4; 2]; 4] = core::array::from_fn(|i| bytemuck::cast(group[i]));
        let low = f32x4::transpose(quad.map(|r| r[0]));
        let high = f32x4::transpose(quad.map(|r| r[1]));
        let at = 4 * g..4 * g + 4;
        for (row, values) in rows.iter_mut().zip(low.iter().chain(&high)) {
            row[at.clone()].copy_from_slice(values.as_array());
        }
    }
    for (i, lane) in lanes.iter().enumerate().skip(whole) {
        for (row, &value) in rows.iter_mut().zip(lane.as_array()) {
            row[i] = value;
        }
    }
}

/// Reads `lanes[i][l] = input[l·stride + i]` for every lane `l` and `i <
/// lanes.len() <= stride` (`input` holds `LANES` rows of `stride`): the
/// inverse of [`scatter_lanes`].
pub(crate) fn gather_lanes(input: &[f32], stride: usize, lanes: &mut [f32x8]) {
    let mut rows = input.chunks_exact(stride);
    let rows: [&[f32]; LANES] = core::array::from_fn(|_| rows.next().unwrap_or(&[]));
    let whole = lanes.len() / 4 * 4;
    for (g, group) in lanes[..whole].chunks_exact_mut(4).enumerate() {
        let at = 4 * g..4 * g + 4;
        let row = |l: usize| {
            let mut values = [0f32; 4];
            values.copy_from_slice(&rows[l][at.clone()]);
            f32x4::new(values)
        };
        let low = f32x4::transpose(core::array::from_fn(row));
        let high = f32x4::transpose(core::array::from_fn(|l| row(4 + l)));
        for (i, lane) in group.iter_mut().enumerate() {
            *lane = bytemuck::cast([low[i], high[i]]);
        }
    }
    for (i, lane) in lanes.iter_mut().enumerate().skip(whole) {
        *lane = f32x8::new(core::array::from_fn(|l| rows[l][i]));
    }
}

/// `⌊entry·q / t⌋` and `entry·q mod t` for `entry <= t < SMALL_TOTAL`, `q
/// <= t` (integers held in f32, `t >= 1`), exact in f32.
#[inline(always)]
fn small_share(entry: i32x8, q: f32x8, t: f32x8) -> (i32x8, i32x8) {
    let product = entry.round_float() * q;
    let whole = (product / t).fast_trunc_int();
    (whole, (product - whole.round_float() * t).fast_trunc_int())
}

/// Lanes of a key the rank rule compares.
trait RankKey: Copy {
    /// All ones in each lane where `self > other`, else 0, as i32.
    fn greater(self, other: Self) -> i32x8;
}

impl RankKey for f32x8 {
    #[inline(always)]
    fn greater(self, other: Self) -> i32x8 {
        bytemuck::cast(self.simd_gt(other))
    }
}

impl RankKey for i32x8 {
    #[inline(always)]
    fn greater(self, other: Self) -> i32x8 {
        self.simd_gt(other)
    }
}

/// Adds 1 to `out[j]` in each lane where fewer than `extra` entries precede
/// entry `j` in stable descending order of `keys` (larger first, ties to
/// the lower index): the largest-remainder rule's last step.
#[inline(always)]
fn raise_ranked<K: RankKey>(keys: &[K], extra: i32x8, out: &mut [i32x8]) {
    for (j, (&key, o)) in keys.iter().zip(out.iter_mut()).enumerate() {
        // Masks are −1 where true: subtracting counts.
        let mut before = i32x8::ZERO;
        for &other in &keys[..j] {
            // other >= key ⇔ not key > other (no NaN).
            before += i32x8::splat(1) + key.greater(other);
        }
        for &other in &keys[j + 1..] {
            before -= other.greater(key);
        }
        *o -= before.simd_lt(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvConfig, NetworkGenerator};
    use crate::rng::{Xoshiro128PlusPlus, seeded, uniform01};
    use crate::{BatchEnv, BatchMetrics, StepMetrics};
    use alloc::collections::BTreeMap;

    /// Actions of every kind a step accepts, row by row: points of the
    /// simplex, entries below 0 and above 1, sums far above and below 1,
    /// all zeros; NaN in the padding (which does not count).
    fn actions(model: &EnvModel, envs: usize, rng: &mut Xoshiro128PlusPlus) -> Vec<f32> {
        let (n, w) = (model.num_agents, model.action_width);
        let mut actions = vec![f32::NAN; envs * n * w];
        for (i, row) in actions.chunks_exact_mut(w).enumerate() {
            let m = model.degrees[i % n] + 2;
            let kind = (uniform01(rng) * 10.0) as u32;
            let draws: Vec<f32> = (0..m).map(|_| uniform01(rng) as f32).collect();
            let sum: f32 = draws.iter().sum();
            for (p, &d) in row[..m].iter_mut().zip(&draws) {
                *p = match kind {
                    0 => d * 3.0 - 1.0,
                    1 => d * 2.0,
                    2 => d * 0.2,
                    3 => 0.0,
                    4 => (d * 4.0).floor() / 4.0,
                    _ => d / sum,
                };
            }
        }
        actions
    }

    /// Steps three batches of `config` alike: with the plain step and with
    /// the per-step metrics (both take the lane step where it applies), and
    /// env by env with the per-env step; finds every state, reward, done,
    /// terminal observation and metric equal at every step. Some envs are
    /// reset mid-episode so that envs are at different steps. Returns
    /// whether the lane step applies.
    fn lanes_equal_per_env_steps(config: EnvConfig, envs: usize, steps: usize) -> bool {
        let model = EnvModel::new(&config.build().unwrap()).unwrap();
        let stride = model.num_agents * model.action_width;
        let mut plain = BatchEnv::new(model.clone(), envs).unwrap();
        let mut recorded = BatchEnv::new(model.clone(), envs).unwrap();
        let mut per_env = BatchEnv::new(model.clone(), envs).unwrap();
        for batch in [&mut plain, &mut recorded, &mut per_env] {
            batch.reset(17).unwrap();
        }
        let mut metrics = BatchMetrics::default();
        let mut per_env_metrics = vec![StepMetrics::new(&model); envs];
        let mut rng = seeded(5);
        for step in 0..steps {
            if step % 7 == 3 {
                let i = (uniform01(&mut rng) * envs as f64) as usize;
                for batch in [&mut plain, &mut recorded, &mut per_env] {
                    batch.reset_env(i, None, Some(step as u32)).unwrap();
                }
            }
            let a = actions(&model, envs, &mut rng);
            plain.step(&a).unwrap();
            recorded.step_with_metrics(&a, &mut metrics).unwrap();
            for (i, m) in per_env_metrics.iter_mut().enumerate() {
                per_env
                    .step_env(i, &a[i * stride..(i + 1) * stride], Some(m))
                    .unwrap();
            }
            assert_eq!(plain.state(), per_env.state(), "step {step}");
            assert_eq!(recorded.state(), per_env.state(), "step {step}");
            assert_eq!(metrics.envs(), per_env_metrics, "step {step}");
            assert_eq!(
                plain.final_observations(),
                per_env.final_observations(),
                "step {step}"
            );
        }
        applies(&model)
    }

    fn with_steps(network: &[&str], max_steps: i64) -> EnvConfig {
        EnvConfig {
            max_steps,
            ..EnvConfig::with_network(network)
        }
    }

    #[test]
    fn lane_steps_equal_per_env_steps_on_the_reference_topologies() {
        let three = ["node_0 node_1 node_2", "node_1 node_2"];
        let five = [
            "node_0 node_1 node_2",
            "node_3 node_2 node_0",
            "node_1 node_4",
        ];
        // 37 envs: four lane blocks and a tail of 5; 23-step episodes end
        // inside the run.
        for network in [&["node_0 node_1"][..], &three, &five] {
            assert!(lanes_equal_per_env_steps(with_steps(network, 23), 37, 60));
        }
        // The seconds regime's default episodes (rejects at nearly every
        // step), across one episode end.
        assert!(lanes_equal_per_env_steps(
            EnvConfig::with_network(&three),
            16,
            300
        ));
    }

    /// Every degree the lane step takes, 0 to MAX_DEGREE: a node of
    /// degree 6, one of degree 5, their leaves (degree 1) and a node alone.
    #[test]
    fn lane_steps_equal_per_env_steps_at_every_degree() {
        let network = [
            "node_0 node_1 node_2 node_3 node_4 node_5 node_6",
            "node_7 node_8 node_9 node_10 node_11 node_12",
            "node_13",
        ];
        let config = with_steps(&network, 23);
        let model = EnvModel::new(&config.clone().build().unwrap()).unwrap();
        let mut degrees = model.degrees.clone();
        degrees.sort_unstable();
        degrees.dedup();
        assert_eq!(degrees, [0, 1, 5, 6]);
        assert!(lanes_equal_per_env_steps(config, 24, 40));
    }

    #[test]
    fn lane_steps_equal_per_env_steps_on_generated_federations() {
        for (generator, lanes) in [
            (NetworkGenerator::Ring { nodes: 20 }, true),
            (NetworkGenerator::Grid { rows: 3, cols: 4 }, true),
            (
                NetworkGenerator::StarOfStars {
                    hubs: 2,
                    leaves_per_hub: 9,
                    hub_links: Default::default(),
                },
                false,
            ),
        ] {
            let config = EnvConfig {
                network_generator: Some(generator),
                max_steps: 30,
                node_ram_gb_range: Some(vec![1.0, 6.0]),
                ..EnvConfig::default()
            };
            assert_eq!(lanes_equal_per_env_steps(config, 24, 40), lanes);
        }
    }

    /// Static traces up to the largest rate: totals above 2¹⁶ take the
    /// 64-bit shares, and zero rates give reward 0.
    #[test]
    fn lane_steps_equal_per_env_steps_at_large_and_zero_rates() {
        let names = ["node_0", "node_1", "node_2"];
        let rates = [
            0i64,
            1,
            7,
            150,
            40_000,
            1 << 19,
            i64::from(crate::input_rate::MAX_INPUT_RATE),
        ];
        let traces: BTreeMap<String, Vec<i64>> = names
            .iter()
            .enumerate()
            .map(|(a, name)| {
                let trace = (0..20).map(|t| rates[(a * 3 + t) % rates.len()]).collect();
                (name.to_string(), trace)
            })
            .collect();
        let config = EnvConfig {
            input_rate_method: "static".into(),
            input_rate_trace: Some(traces),
            ..with_steps(&["node_0 node_1 node_2", "node_1 node_2"], 20)
        };
        assert!(lanes_equal_per_env_steps(config, 16, 45));
    }

    /// The f32 shares equal integer division for every total up to the
    /// largest that takes them (every entry, every 7th reject count).
    #[test]
    fn small_shares_are_exact_up_to_the_largest_small_total() {
        for total in [
            1,
            2,
            3,
            1000,
            SMALL_TOTAL - 3,
            SMALL_TOTAL - 2,
            SMALL_TOTAL - 1,
        ] {
            let t = f32x8::splat(total as f32);
            for q in (0..=total).step_by(7).chain([total]) {
                let qf = f32x8::splat(q as f32);
                for first in (0..=total).step_by(LANES) {
                    let entry: [i32; LANES] =
                        core::array::from_fn(|l| (first + l as i32).min(total));
                    let (share, remainder) = small_share(i32x8::new(entry), qf, t);
                    let lanes = entry.iter().zip(share.to_array()).zip(remainder.to_array());
                    for ((&e, share), remainder) in lanes {
                        let product = i64::from(e) * i64::from(q);
                        let expected = (product / i64::from(total), product % i64::from(total));
                        let got = (i64::from(share), i64::from(remainder));
                        assert_eq!(got, expected, "{e}·{q} / {total}");
                    }
                }
            }
        }
    }

    /// The rank rule is the selection rule: on lists with many ties, the
    /// lanes' raise equals repeated first-largest selection, by hand.
    #[test]
    fn ranks_raise_what_repeated_selection_raises() {
        let keys: [i32; 5] = [3, 7, 7, 0, 3];
        // Stable descending order: 1, 2, 0, 4, 3.
        for (extra, expected) in [
            (0, [0, 0, 0, 0, 0]),
            (1, [0, 1, 0, 0, 0]),
            (2, [0, 1, 1, 0, 0]),
            (3, [1, 1, 1, 0, 0]),
            (4, [1, 1, 1, 0, 1]),
        ] {
            let lanes: Vec<i32x8> = keys.iter().map(|&k| i32x8::splat(k)).collect();
            let mut out = vec![i32x8::ZERO; keys.len()];
            raise_ranked(&lanes, i32x8::splat(extra), &mut out);
            let got: Vec<i32> = out.iter().map(|o| o.to_array()[3]).collect();
            assert_eq!(got, expected, "extra {extra}");
        }
    }
}
