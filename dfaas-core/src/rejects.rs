//! Distribution of a node's rejected requests over its incoming list
//! (spec §6.4).
//!
//! The incoming list holds the node's own local count first (even when 0),
//! then every positive forward it received, in arrival order. Given the
//! total `T` and the number of rejects `Q <= T`, each entry gets
//! `floor(entry·Q/T)` and the remaining rejects go one each to the entries
//! with the largest fractional parts (ties: the earlier entry).
//!
//! Two arithmetics, chosen by [`RejectArithmetic`]:
//! * [`RejectArithmetic::Exact`] computes the fractional parts exactly in
//!   integers (`entry·Q mod T`); the GPU kernels use this rule.
//! * [`RejectArithmetic::Reference`] reproduces the reference's float64
//!   order of operations (`(entry/T)·Q`), which breaks some exact ties
//!   differently (about 0.3 % of random multi-entry lists).

/// Which arithmetic distributes rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum RejectArithmetic {
    /// Exact integers (CPU and GPU agree); the default.
    #[default]
    Exact,
    /// The reference's float64 order of operations (CPU only).
    Reference,
}

/// Writes into `out[i]` the rejects of `incoming[i]` given `rejects <=
/// total` rejects for a list summing to `total`. `out.len() ==
/// incoming.len()`.
pub fn distribute_rejects(
    arithmetic: RejectArithmetic,
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
) {
    match arithmetic {
        RejectArithmetic::Exact => distribute_exact(incoming, total, rejects, out),
        RejectArithmetic::Reference => distribute_reference(incoming, total, rejects, out),
    }
}

/// Largest incoming list handled without allocation (1 + the largest
/// degree the configuration allows).
pub const MAX_LIST: usize = 64;

/// Exact rule: largest remainder over `entry·Q mod T`, each entry raised
/// at most once. `incoming.len() <= MAX_LIST`.
pub fn distribute_exact(incoming: &[u32], total: u32, rejects: u32, out: &mut [u32]) {
    out.fill(0);
    if rejects == 0 || total == 0 {
        return;
    }
    // Remainders of `entry·Q / T`; −1 marks an entry already raised.
    let mut remainders = [0i64; MAX_LIST];
    let mut given = 0u32;
    if total <= u32::from(u16::MAX) {
        // entry·Q <= T² fits in 32 bits: the cheaper division.
        for ((o, r), &e) in out.iter_mut().zip(remainders.iter_mut()).zip(incoming) {
            let product = e * rejects;
            let share = product / total;
            *o = share;
            *r = i64::from(product - share * total);
            given += share;
        }
    } else {
        let (q, t) = (u64::from(rejects), u64::from(total));
        for ((o, r), &e) in out.iter_mut().zip(remainders.iter_mut()).zip(incoming) {
            let product = u64::from(e) * q;
            let share = product / t;
            *o = share as u32;
            *r = (product - share * t) as i64;
            given += share as u32;
        }
    }
    // The `Q − given` entries first in stable descending order of their
    // remainders get one more each (there are fewer of them than entries,
    // since every remainder is below T).
    let remainders = &mut remainders[..incoming.len()];
    for _ in given..rejects {
        let (mut best, mut best_value) = (0, remainders[0]);
        for (i, &r) in remainders.iter().enumerate().skip(1) {
            if r > best_value {
                (best, best_value) = (i, r);
            }
        }
        if best_value < 0 {
            break;
        }
        out[best] += 1;
        remainders[best] = -1;
    }
}

/// The reference's float64 rule: `raw = (entry/T)·Q`, floor, fractional
/// part `raw − floor`; each remaining reject goes to the first largest
/// fractional part, which is then set to −1.
pub fn distribute_reference(incoming: &[u32], total: u32, rejects: u32, out: &mut [u32]) {
    out.fill(0);
    if rejects == 0 || total == 0 {
        return;
    }
    let (q, t) = (f64::from(rejects), f64::from(total));
    let raw = |e: u32| (f64::from(e) / t) * q;
    let mut floored_sum = 0i64;
    for (o, &e) in out.iter_mut().zip(incoming) {
        let floored = libm::floor(raw(e));
        *o = floored as u32;
        floored_sum += floored as i64;
    }
    let remainder = i64::from(rejects) - floored_sum;
    for _ in 0..remainder.max(0) {
        let mut best: Option<(usize, f64)> = None;
        for (i, &e) in incoming.iter().enumerate() {
            let r = raw(e);
            let floored = libm::floor(r);
            let frac = if f64::from(out[i]) > floored {
                -1.0
            } else {
                r - floored
            };
            if best.is_none_or(|(_, f)| frac > f) {
                best = Some((i, frac));
            }
        }
        if let Some((i, _)) = best {
            out[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_prelude::*;

    #[test]
    fn exact_ties_go_to_the_earlier_entry() {
        let mut out = [0; 3];
        distribute_exact(&[2, 2, 2], 6, 1, &mut out);
        assert_eq!(out, [1, 0, 0]);
        distribute_exact(&[0, 5], 5, 5, &mut out[..2]);
        assert_eq!(out[..2], [0, 5]);
    }

    #[test]
    fn both_arithmetics_conserve_the_total() {
        let lists: [&[u32]; 4] = [&[7, 3, 9], &[0, 1, 1, 1], &[150, 33, 12, 1, 99], &[4]];
        for list in lists {
            let total: u32 = list.iter().sum();
            for q in 0..=total {
                for arithmetic in [RejectArithmetic::Exact, RejectArithmetic::Reference] {
                    let mut out = vec![0; list.len()];
                    distribute_rejects(arithmetic, list, total, q, &mut out);
                    assert_eq!(out.iter().sum::<u32>(), q, "{list:?} q={q}");
                    assert!(out.iter().zip(list).all(|(r, e)| r <= e));
                }
            }
        }
    }
}
