//! Splitting an agent's input rate by its action (spec §6.1).
//!
//! An action is a point of the simplex `[local, forward to neighbour
//! 1..k, reject]`. Every entry's product with the input rate `R` is taken
//! in f32 (`p_j as f32 · R as f32`, correctly rounded on CPU and GPU) and
//! truncated toward zero; a positive remainder `R − Σ` is handed out one by
//! one in decreasing order of the fractional parts (ties: lower index
//! first), cycling when it exceeds the number of entries. The counts sum
//! to `R`.
//!
//! # Actions off the simplex
//! The reference does not validate actions. This project's policy, the
//! same on CPU and GPU:
//! * wrong length → [`crate::StepError::ActionLength`] (checked by the env);
//! * NaN or ±∞ → [`crate::StepError::NonFiniteAction`] (the reference
//!   raises too);
//! * entries are clamped to `[0, 1]` (the reference silently produces
//!   negative counts for negative entries);
//! * a sum below 1 (including all zeros) leaves a remainder that is handed
//!   out as above — exactly what the reference does;
//! * when the truncated counts exceed `R` (only possible for sums above 1;
//!   the reference fails an assertion) they are rescaled to `R` by the
//!   exact largest-remainder rule of [`crate::rejects::distribute_exact`].
//!
//! So whenever the reference returns non-negative counts, this split
//! returns the same counts (given the f32/f64 rule of the conformance
//! vectors).

use crate::input_rate::MAX_INPUT_RATE;
use crate::rejects::{distribute_exact_unchecked, raise_largest};
use core::fmt;

/// Largest number of action entries [`split_requests`] handles without
/// allocation (2 + the degree of the node).
pub const MAX_ACTIONS: usize = 64;

/// Why [`split_requests`] refused its input (nothing is written then).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SplitError {
    /// Occurs when `counts` is not as long as `action`.
    Length {
        /// Entries of the action.
        action: usize,
        /// Entries of `counts`.
        counts: usize,
    },
    /// Occurs when the action has no entry or more than [`MAX_ACTIONS`]
    /// (no split of a positive rate could sum to it, or no room for it).
    EntryCount {
        /// Entries of the action.
        entries: usize,
    },
    /// Occurs when an entry is NaN or ±∞.
    NonFinite {
        /// Index of the entry.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Occurs when the rate is above [`MAX_INPUT_RATE`] (f32 products
    /// would no longer be exact).
    RateTooLarge {
        /// The rate.
        rate: u32,
    },
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { action, counts } => write!(
                f,
                "counts: must have one entry per action entry ({action}), got {counts}"
            ),
            Self::EntryCount { entries } => {
                write!(
                    f,
                    "action: must have 1..={MAX_ACTIONS} entries, got {entries}"
                )
            }
            Self::NonFinite { index, value } => {
                write!(f, "action[{index}]: must be finite, got {value}")
            }
            Self::RateTooLarge { rate } => {
                write!(f, "rate: must be <= {MAX_INPUT_RATE}, got {rate}")
            }
        }
    }
}

impl core::error::Error for SplitError {}

/// Splits `rate` requests by `action` into `counts` (same length as
/// `action`, 1 to [`MAX_ACTIONS`] entries, `rate <=`
/// [`MAX_INPUT_RATE`]).
///
/// # Errors
/// [`SplitError`] naming the input that does not fit; `counts` is then
/// untouched.
pub fn split_requests(action: &[f32], rate: u32, counts: &mut [u32]) -> Result<(), SplitError> {
    if counts.len() != action.len() {
        return Err(SplitError::Length {
            action: action.len(),
            counts: counts.len(),
        });
    }
    if action.is_empty() || action.len() > MAX_ACTIONS {
        return Err(SplitError::EntryCount {
            entries: action.len(),
        });
    }
    if let Some((index, &value)) = action.iter().enumerate().find(|(_, p)| !p.is_finite()) {
        return Err(SplitError::NonFinite { index, value });
    }
    if rate > MAX_INPUT_RATE {
        return Err(SplitError::RateTooLarge { rate });
    }
    let mut fractions = [0f32; MAX_ACTIONS];
    split_finite(action, rate, counts, &mut fractions[..action.len()]);
    Ok(())
}

/// Lanes of the per-env split's vector pass (one SSE or NEON register of
/// f32).
const LANES: usize = 4;

/// 2²³: below it, `x + 2²³ − 2²³` rounds `x` to an integer, and the bits
/// of `2²³ + i` minus those of 2²³ are the integer `i`.
const TWO_23: f32 = 8_388_608.0;

/// Truncated products and their fractional parts of `L` action entries
/// `p` with their rates `r` (each entry clamped to [0, 1], so `0 <= p·r <=
/// r <= MAX_INPUT_RATE < 2²³`): the same as `p·r as u32` and `p·r − (p·r
/// as u32) as f32`, without a scalar conversion per lane.
#[inline(always)]
fn split_lanes<const L: usize>(p: [f32; L], r: [f32; L]) -> ([u32; L], [f32; L]) {
    let mut whole = [0u32; L];
    let mut fraction = [0f32; L];
    for j in 0..L {
        let product = p[j].clamp(0.0, 1.0) * r[j];
        let nearest = (product + TWO_23) - TWO_23;
        let floor = if nearest > product {
            nearest - 1.0
        } else {
            nearest
        };
        whole[j] = (floor + TWO_23).to_bits() - TWO_23.to_bits();
        fraction[j] = product - floor;
    }
    (whole, fraction)
}

/// [`split_requests`] for an input already checked (finite action of at
/// most [`MAX_ACTIONS`] entries, `counts` and the caller's scratch
/// `fractions` as long as `action`, `rate <= MAX_INPUT_RATE`).
pub(crate) fn split_finite(action: &[f32], rate: u32, counts: &mut [u32], fractions: &mut [f32]) {
    let n = action.len();
    let r = rate as f32;
    let mut assigned = 0u32;
    let mut chunks = action.chunks_exact(LANES);
    let mut start = 0;
    for chunk in chunks.by_ref() {
        let (whole, fraction) = split_lanes(chunk.try_into().unwrap_or([0.0; LANES]), [r; LANES]);
        counts[start..start + LANES].copy_from_slice(&whole);
        fractions[start..start + LANES].copy_from_slice(&fraction);
        assigned += whole.iter().sum::<u32>();
        start += LANES;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut padded = [0f32; LANES];
        padded[..tail.len()].copy_from_slice(tail);
        let (whole, fraction) = split_lanes(padded, [r; LANES]);
        counts[start..].copy_from_slice(&whole[..tail.len()]);
        fractions[start..].copy_from_slice(&fraction[..tail.len()]);
        assigned += whole.iter().sum::<u32>();
    }
    if assigned > rate {
        let mut truncated = [0u32; MAX_ACTIONS];
        truncated[..n].copy_from_slice(counts);
        distribute_exact_unchecked(&truncated[..n], assigned, rate, counts);
        return;
    }
    let remaining = rate - assigned;
    if remaining == 0 || n == 0 {
        return;
    }
    let full_rounds = remaining / n as u32;
    if full_rounds > 0 {
        for c in counts.iter_mut() {
            *c += full_rounds;
        }
    }
    // The first `remaining mod n` entries in stable descending order of the
    // fractional parts get one more.
    raise_largest(fractions, (remaining % n as u32) as usize, -1.0, counts);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(action: &[f32], rate: u32) -> [u32; 8] {
        let mut out = [0u32; 8];
        split_requests(action, rate, &mut out[..action.len()]).unwrap();
        out
    }

    #[test]
    fn remainder_goes_to_largest_fractions_then_cycles() {
        assert_eq!(split(&[0.5, 0.5], 7)[..2], [4, 3]);
        assert_eq!(split(&[0.0, 0.0, 0.0], 7)[..3], [3, 2, 2]);
        assert_eq!(split(&[0.25, 0.25, 0.25, 0.25], 3)[..4], [1, 1, 1, 0]);
    }

    #[test]
    fn off_simplex_policy() {
        // Negative entries clamp to 0; sum above 1 is rescaled.
        assert_eq!(split(&[1.3, -0.3], 10)[..2], [10, 0]);
        assert_eq!(split(&[0.6, 0.5, 0.0], 100)[..3], [55, 45, 0]);
        assert_eq!(split(&[2.0, -1.0, 0.0], 5)[..3], [5, 0, 0]);
        assert_eq!(split(&[0.5, 0.51], 10)[..2], [5, 5]);
        let mut out = [0u32; 3];
        assert!(matches!(
            split_requests(&[0.5, f32::NAN, 0.5], 10, &mut out),
            Err(SplitError::NonFinite { index: 1, .. })
        ));
        assert!(split_requests(&[f32::INFINITY, 0.0, 0.0], 10, &mut out).is_err());
        assert_eq!(out, [0, 0, 0]);
    }

    #[test]
    fn inputs_that_do_not_fit_are_refused() {
        let mut out = [7u32; 2];
        assert_eq!(
            split_requests(&[0.5, 0.5, 0.0], 10, &mut out),
            Err(SplitError::Length {
                action: 3,
                counts: 2
            })
        );
        let wide = [0.0f32; MAX_ACTIONS + 1];
        let mut counts = [0u32; MAX_ACTIONS + 1];
        assert_eq!(
            split_requests(&wide, 10, &mut counts),
            Err(SplitError::EntryCount { entries: 65 })
        );
        assert_eq!(
            split_requests(&[], 3, &mut []),
            Err(SplitError::EntryCount { entries: 0 })
        );
        assert_eq!(
            split_requests(&[1.0, 0.0], MAX_INPUT_RATE + 1, &mut out),
            Err(SplitError::RateTooLarge {
                rate: MAX_INPUT_RATE + 1
            })
        );
        assert_eq!(out, [7, 7], "nothing written on error");
        // The largest rate with every entry at 1 (sum far above 1): the
        // rescale takes the exact 64-bit path: equal shares, the one left
        // over to the first entry.
        let mut big = [0u32; 3];
        split_requests(&[1.0, 1.0, 1.0], MAX_INPUT_RATE, &mut big).unwrap();
        assert_eq!(big, [349_526, 349_525, 349_525]);
    }
}
