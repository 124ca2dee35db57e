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

use crate::rejects::distribute_exact;

/// Largest number of action entries [`split_requests`] handles without
/// allocation (2 + the degree of the node).
pub const MAX_ACTIONS: usize = 64;

/// Splits `rate` requests by `action` into `counts` (same length as
/// `action`, at most [`MAX_ACTIONS`]). Returns `false`, leaving `counts`
/// untouched, when an entry is not finite.
pub fn split_requests(action: &[f32], rate: u32, counts: &mut [u32]) -> bool {
    if action.iter().any(|p| !p.is_finite()) {
        return false;
    }
    let mut fractions = [0f32; MAX_ACTIONS];
    split_finite(action, rate, counts, &mut fractions[..action.len()]);
    true
}

/// [`split_requests`] for an action already known to be finite, with the
/// caller's scratch for the fractional parts (same length as `action`).
pub(crate) fn split_finite(action: &[f32], rate: u32, counts: &mut [u32], fractions: &mut [f32]) {
    let n = action.len();
    let r = rate as f32;
    let mut assigned: u64 = 0;
    for ((&p, c), f) in action
        .iter()
        .zip(counts.iter_mut())
        .zip(fractions.iter_mut())
    {
        let product = p.clamp(0.0, 1.0) * r;
        let whole = product as u32; // truncation toward zero
        *c = whole;
        *f = product - whole as f32;
        assigned += u64::from(whole);
    }
    let rate64 = u64::from(rate);
    if assigned > rate64 {
        let mut truncated = [0u32; MAX_ACTIONS];
        truncated[..n].copy_from_slice(counts);
        distribute_exact(&truncated[..n], assigned as u32, rate, counts);
        return;
    }
    let remaining = rate64 - assigned;
    if remaining == 0 || n == 0 {
        return;
    }
    let full_rounds = (remaining / n as u64) as u32;
    if full_rounds > 0 {
        for c in counts.iter_mut() {
            *c += full_rounds;
        }
    }
    // The first `remaining mod n` entries in stable descending order of the
    // fractional parts get one more; −1 marks an entry already served.
    for _ in 0..remaining % n as u64 {
        let (mut best, mut best_value) = (0, fractions[0]);
        for (j, &f) in fractions.iter().enumerate().skip(1) {
            if f > best_value {
                (best, best_value) = (j, f);
            }
        }
        counts[best] += 1;
        fractions[best] = -1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(action: &[f32], rate: u32) -> [u32; 8] {
        let mut out = [0u32; 8];
        assert!(split_requests(action, rate, &mut out[..action.len()]));
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
        assert!(!split_requests(&[f32::NAN, 0.5, 0.5], 10, &mut out));
        assert!(!split_requests(&[f32::INFINITY, 0.0, 0.0], 10, &mut out));
        assert_eq!(out, [0, 0, 0]);
    }
}
