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

use core::fmt;

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

/// Why a reject distribution refused its input (nothing is written then).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectError {
    /// Occurs when `out` is not as long as `incoming`.
    Length {
        /// Entries of the incoming list.
        incoming: usize,
        /// Entries of `out`.
        out: usize,
    },
    /// Occurs when the exact rule is given more than [`MAX_LIST`] entries.
    TooManyEntries {
        /// Entries of the incoming list.
        entries: usize,
    },
    /// Occurs when `total` is not the sum of the list.
    TotalMismatch {
        /// The given total.
        total: u32,
        /// The list's sum.
        sum: u64,
    },
    /// Occurs when there are more rejects than requests.
    TooManyRejects {
        /// The given rejects.
        rejects: u32,
        /// The list's total.
        total: u32,
    },
}

impl fmt::Display for RejectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { incoming, out } => write!(
                f,
                "out: must have one entry per incoming entry ({incoming}), got {out}"
            ),
            Self::TooManyEntries { entries } => {
                write!(f, "incoming: at most {MAX_LIST} entries, got {entries}")
            }
            Self::TotalMismatch { total, sum } => {
                write!(f, "total: must be the list's sum ({sum}), got {total}")
            }
            Self::TooManyRejects { rejects, total } => {
                write!(f, "rejects: must be <= total ({total}), got {rejects}")
            }
        }
    }
}

impl core::error::Error for RejectError {}

/// Checks what both rules need: `out` as long as `incoming`, `total` its
/// sum, `rejects <= total`.
fn check(incoming: &[u32], total: u32, rejects: u32, out: &[u32]) -> Result<(), RejectError> {
    if out.len() != incoming.len() {
        return Err(RejectError::Length {
            incoming: incoming.len(),
            out: out.len(),
        });
    }
    let sum: u64 = incoming.iter().map(|&e| u64::from(e)).sum();
    if sum != u64::from(total) {
        return Err(RejectError::TotalMismatch { total, sum });
    }
    if rejects > total {
        return Err(RejectError::TooManyRejects { rejects, total });
    }
    Ok(())
}

/// Writes into `out[i]` the rejects of `incoming[i]` given `rejects <=
/// total` rejects for a list summing to `total`, by `arithmetic`'s rule.
///
/// # Errors
/// [`RejectError`] naming the input that does not fit (lengths, a total
/// that is not the sum, more rejects than requests, a list longer than
/// [`MAX_LIST`] for the exact rule).
pub fn distribute_rejects(
    arithmetic: RejectArithmetic,
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
) -> Result<(), RejectError> {
    match arithmetic {
        RejectArithmetic::Exact => distribute_exact(incoming, total, rejects, out),
        RejectArithmetic::Reference => distribute_reference(incoming, total, rejects, out),
    }
}

/// [`distribute_rejects`] for inputs already known to fit (the env's own
/// incoming lists).
pub(crate) fn distribute_unchecked(
    arithmetic: RejectArithmetic,
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
) {
    match arithmetic {
        RejectArithmetic::Exact => distribute_exact_unchecked(incoming, total, rejects, out),
        RejectArithmetic::Reference => reference_unchecked(incoming, total, rejects, out),
    }
}

/// Largest incoming list handled without allocation (1 + the largest
/// degree the configuration allows).
pub const MAX_LIST: usize = 64;

/// Exact rule: largest remainder over `entry·Q mod T`, each entry raised
/// at most once.
///
/// # Errors
/// As [`distribute_rejects`].
pub fn distribute_exact(
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
) -> Result<(), RejectError> {
    check(incoming, total, rejects, out)?;
    if incoming.len() > MAX_LIST {
        return Err(RejectError::TooManyEntries {
            entries: incoming.len(),
        });
    }
    distribute_exact_unchecked(incoming, total, rejects, out);
    Ok(())
}

/// [`distribute_exact`] for inputs already checked.
pub(crate) fn distribute_exact_unchecked(
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
) {
    if rejects == 0 || total == 0 {
        out.fill(0);
        return;
    }
    // Remainders of `entry·Q / T`, below T: they fit in 32 bits (and in a
    // short array for the common short lists, which is cheaper to clear).
    let n = incoming.len();
    if n <= SHORT_LIST {
        exact_shares(incoming, total, rejects, out, &mut [0; SHORT_LIST][..n]);
    } else {
        exact_shares(incoming, total, rejects, out, &mut [0; MAX_LIST][..n]);
    }
}

/// Lists up to this long keep their remainders in a short array.
const SHORT_LIST: usize = 8;

/// The exact rule for `Q = rejects > 0`, `T = total > 0`, with
/// `remainders` (as long as `incoming`) for scratch.
#[inline(always)]
fn exact_shares(
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
    remainders: &mut [u32],
) {
    let mut given = 0u32;
    if total <= u32::from(u16::MAX) {
        // entry·Q <= T² fits in 32 bits: the cheaper division.
        for ((o, r), &e) in out.iter_mut().zip(remainders.iter_mut()).zip(incoming) {
            let product = e * rejects;
            let share = product / total;
            *o = share;
            *r = product - share * total;
            given += share;
        }
    } else {
        let (q, t) = (u64::from(rejects), u64::from(total));
        for ((o, r), &e) in out.iter_mut().zip(remainders.iter_mut()).zip(incoming) {
            let product = u64::from(e) * q;
            let share = product / t;
            *o = share as u32;
            *r = (product - share * t) as u32;
            given += share as u32;
        }
    }
    // The `Q − given` entries first in stable descending order of their
    // remainders get one more each. The remainders are below T and sum to
    // (Q − given)·T, so more than Q − given of them are positive: 0 can
    // mark an entry already raised.
    raise_largest(remainders, (rejects - given) as usize, 0, out);
}

/// The largest-remainder rule's last step: adds 1 to `out[i]` for each of
/// the first `extra` entries in stable descending order of `keys` (larger
/// first, ties to the lower index), marking each with `taken`, a key that
/// none of them has and that no entry still to raise is below.
#[inline]
pub(crate) fn raise_largest<K: PartialOrd + Copy>(
    keys: &mut [K],
    extra: usize,
    taken: K,
    out: &mut [u32],
) {
    for _ in 0..extra {
        let (mut best, mut best_key) = (0, keys[0]);
        for (i, &key) in keys.iter().enumerate().skip(1) {
            if key > best_key {
                (best, best_key) = (i, key);
            }
        }
        out[best] += 1;
        keys[best] = taken;
    }
}

/// The reference's float64 rule: `raw = (entry/T)·Q`, floor, fractional
/// part `raw − floor`; each remaining reject goes to the first largest
/// fractional part, which is then set to −1.
///
/// # Errors
/// As [`distribute_rejects`] (any list length is accepted).
pub fn distribute_reference(
    incoming: &[u32],
    total: u32,
    rejects: u32,
    out: &mut [u32],
) -> Result<(), RejectError> {
    check(incoming, total, rejects, out)?;
    reference_unchecked(incoming, total, rejects, out);
    Ok(())
}

/// [`distribute_reference`] for inputs already checked.
fn reference_unchecked(incoming: &[u32], total: u32, rejects: u32, out: &mut [u32]) {
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
        distribute_exact(&[2, 2, 2], 6, 1, &mut out).unwrap();
        assert_eq!(out, [1, 0, 0]);
        distribute_exact(&[0, 5], 5, 5, &mut out[..2]).unwrap();
        assert_eq!(out[..2], [0, 5]);
    }

    #[test]
    fn inputs_that_do_not_fit_are_refused_and_nothing_is_written() {
        let mut out = [9u32; 3];
        for arithmetic in [RejectArithmetic::Exact, RejectArithmetic::Reference] {
            let d = |incoming: &[u32], total, rejects, out: &mut [u32]| {
                distribute_rejects(arithmetic, incoming, total, rejects, out)
            };
            assert_eq!(
                d(&[1, 2], 3, 1, &mut out),
                Err(RejectError::Length {
                    incoming: 2,
                    out: 3
                })
            );
            assert_eq!(
                d(&[1, 2, 3], 5, 1, &mut out),
                Err(RejectError::TotalMismatch { total: 5, sum: 6 })
            );
            // A sum that overflows u32 is not mistaken for a small total.
            assert_eq!(
                d(&[u32::MAX, 2, 0], 1, 1, &mut out),
                Err(RejectError::TotalMismatch {
                    total: 1,
                    sum: u64::from(u32::MAX) + 2
                })
            );
            assert_eq!(
                d(&[1, 2, 3], 6, 7, &mut out),
                Err(RejectError::TooManyRejects {
                    rejects: 7,
                    total: 6
                })
            );
            assert_eq!(out, [9, 9, 9]);
        }
        let long = [1u32; MAX_LIST + 1];
        let mut wide = [0u32; MAX_LIST + 1];
        assert_eq!(
            distribute_exact(&long, 65, 3, &mut wide),
            Err(RejectError::TooManyEntries { entries: 65 })
        );
        distribute_reference(&long, 65, 3, &mut wide).unwrap();
        assert_eq!(wide.iter().sum::<u32>(), 3);
    }

    #[test]
    fn large_totals_take_the_64_bit_path_exactly() {
        // T = 3·2²⁰ > 2¹⁶, Q = T − 1: entry·Q needs more than 32 bits.
        // By hand: shares ⌊2²⁰·(T−1)/T⌋ = 2²⁰ − 1 with remainder T − 2²⁰
        // each; the two rejects left go to the first two entries.
        let e = 1u32 << 20;
        let mut out = [0u32; 3];
        distribute_exact(&[e, e, e], 3 * e, 3 * e - 1, &mut out).unwrap();
        assert_eq!(out, [e, e, e - 1]);
    }

    #[test]
    fn both_arithmetics_conserve_the_total() {
        let lists: [&[u32]; 4] = [&[7, 3, 9], &[0, 1, 1, 1], &[150, 33, 12, 1, 99], &[4]];
        for list in lists {
            let total: u32 = list.iter().sum();
            for q in 0..=total {
                for arithmetic in [RejectArithmetic::Exact, RejectArithmetic::Reference] {
                    let mut out = vec![0; list.len()];
                    distribute_rejects(arithmetic, list, total, q, &mut out).unwrap();
                    assert_eq!(out.iter().sum::<u32>(), q, "{list:?} q={q}");
                    assert!(out.iter().zip(list).all(|(r, e)| r <= e));
                }
            }
        }
    }
}
