//! The reward of an agent (spec §6, step 5): with its split `(l, f_1..f_k,
//! r)`, its input `R`, and the rejects of its requests (`local_reject` at
//! its own node, `forward_reject_i` at its i-th neighbour),
//!
//! `(l − local_reject + Σ f_i − Σ forward_reject_i − r) / R`, in [−1, 1],
//! and 0 when `R = 0` (where the reference divides by zero).
//!
//! This module is the one CPU definition: the batch step takes [`of_agent`]
//! in f32, the per-step metrics take [`of_agent_f64`] (the reference's
//! f64), the trainer mixes team rewards with [`team_mixed`]. The GPU step
//! kernel is its WGSL twin, tested against it.

use core::fmt;

/// Why a reward cannot be computed from the given slices.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewardError {
    /// Occurs when the split has fewer than 2 entries (`[local, reject]`
    /// is the shortest).
    SplitTooShort {
        /// Entries given.
        got: usize,
    },
    /// Occurs when the rejects are not `[local, forward_1..k]` for a
    /// split `[local, forward_1..k, reject]`.
    RejectsLength {
        /// `split.len() − 1`.
        expected: usize,
        /// Entries given.
        got: usize,
    },
}

impl fmt::Display for RewardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SplitTooShort { got } => write!(
                f,
                "split: must be [local, forward_1..k, reject] (at least 2 entries), got {got} entries"
            ),
            Self::RejectsLength { expected, got } => write!(
                f,
                "rejects: must be [local, forward_1..k] ({expected} entries), got {got}"
            ),
        }
    }
}

impl core::error::Error for RewardError {}

/// The reward's numerator `l − local_reject + Σ f_i − Σ forward_reject_i −
/// r` from the split `[local, forward_1..k, reject]` and the rejects
/// `[local, forward_1..k]`.
///
/// # Errors
/// [`RewardError`] when the slices do not have those shapes.
pub fn numerator(split: &[u32], rejects: &[u32]) -> Result<i64, RewardError> {
    if split.len() < 2 {
        return Err(RewardError::SplitTooShort { got: split.len() });
    }
    if rejects.len() != split.len() - 1 {
        return Err(RewardError::RejectsLength {
            expected: split.len() - 1,
            got: rejects.len(),
        });
    }
    Ok(numerator_unchecked(split, rejects))
}

/// [`numerator`] for slices known to have its shapes.
pub(crate) fn numerator_unchecked(split: &[u32], rejects: &[u32]) -> i64 {
    let k = split.len() - 2;
    let forwarded: i64 = split[1..=k].iter().map(|&c| i64::from(c)).sum();
    let forward_rejected: i64 = rejects[1..=k].iter().map(|&c| i64::from(c)).sum();
    i64::from(split[0]) - i64::from(rejects[0]) + forwarded
        - forward_rejected
        - i64::from(split[k + 1])
}

/// The reward in f32 (the environment's): `numerator / rate`, 0 for rate 0.
#[must_use]
pub fn of_agent(numerator: i64, rate: u32) -> f32 {
    ratio(numerator, u64::from(rate))
}

/// The reward in f64 (the reference's per-step metric).
#[must_use]
pub fn of_agent_f64(numerator: i64, rate: u32) -> f64 {
    ratio_f64(numerator, u64::from(rate))
}

/// `numerator / total` in f32, 0 for a total of 0 (an agent's reward, or
/// the federation's served share: totals may exceed `u32`).
#[must_use]
pub fn ratio(numerator: i64, total: u64) -> f32 {
    if total == 0 {
        0.0
    } else {
        numerator as f32 / total as f32
    }
}

/// [`ratio`] in f64.
#[must_use]
pub fn ratio_f64(numerator: i64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        numerator as f64 / total as f64
    }
}

/// What each agent's reward measures (config key `reward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum RewardKind {
    /// The reference's per-agent ratio `(served − policy rejects) / input`
    /// ([`numerator`], [`of_agent`]): each agent answers for its own
    /// requests, and a request it rejects itself costs more than one it
    /// loses to overload.
    #[default]
    Reference,
    /// The step's served share of the whole federation, `Σ served / Σ
    /// input` (0 when nothing arrives), the same for every agent: the
    /// federation's throughput. The team-reward weight of training changes
    /// nothing then (every agent's reward already is the mean).
    Served,
}

impl RewardKind {
    /// Whether this is [`RewardKind::Reference`].
    #[must_use]
    pub fn is_reference(&self) -> bool {
        *self == Self::Reference
    }
}

/// What an agent learns from with team weight `beta` ∈ [0, 1]:
/// `(1 − β)·own + β·mean`, where `mean` is the mean reward of all agents.
#[must_use]
pub fn team_mixed(own: f32, mean: f32, beta: f32) -> f32 {
    (1.0 - beta) * own + beta * mean
}

/// The mean of one env's agent rewards (0 for no agents).
#[must_use]
pub fn team_mean(rewards: &[f32]) -> f32 {
    if rewards.is_empty() {
        0.0
    } else {
        rewards.iter().sum::<f32>() / rewards.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_rewards() {
        // l = 6 (2 rejected there), forwards 3 (1 rejected) and 4, reject 2,
        // R = 15: (6 − 2 + 7 − 1 − 2) / 15 = 8/15.
        let n = numerator(&[6, 3, 4, 2], &[2, 1, 0]).unwrap();
        assert_eq!(n, 8);
        assert_eq!(of_agent(n, 15), 8.0f32 / 15.0);
        assert_eq!(of_agent_f64(n, 15), 8.0 / 15.0);
        // Everything rejected: −1; input 0: 0.
        assert_eq!(of_agent(numerator(&[0, 5], &[0]).unwrap(), 5), -1.0);
        assert_eq!(of_agent(0, 0), 0.0);
        assert_eq!(team_mixed(1.0, 0.5, 0.25), 0.875);
        assert_eq!(team_mean(&[0.25, 0.75, -1.0]), 0.0);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        assert_eq!(
            numerator(&[1], &[]),
            Err(RewardError::SplitTooShort { got: 1 })
        );
        assert_eq!(
            numerator(&[1, 2, 3], &[0]),
            Err(RewardError::RejectsLength {
                expected: 2,
                got: 1
            })
        );
    }
}
