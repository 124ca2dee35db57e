//! Generalised advantage estimation (Schulman et al. 2016) over a rollout
//! stored `[step][column]` (a column is one env's agent of one policy), and
//! the standardisation of advantages RLlib applies. The GPU kernel
//! `dfaas_gpu::nn::gae::Gae` is its twin.

use crate::error::{ShapeError, length, product};

/// One rollout's samples, row-major `[step][column]`.
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    /// Steps of the rollout.
    pub steps: usize,
    /// Columns (envs × agents of the policy).
    pub columns: usize,
    /// Rewards.
    pub rewards: &'a [f32],
    /// Critic values of the observations acted on.
    pub values: &'a [f32],
    /// 1 where the step ended an episode (no bootstrap across it), else 0.
    pub dones: &'a [f32],
    /// Values of the observations after the rollout, `[column]`: the
    /// bootstrap of a rollout that ends mid-episode.
    pub last_values: &'a [f32],
}

/// Advantages `A_t = δ_t + γλ(1 − done_t)·A_{t+1}` with `δ_t = r_t +
/// γ(1 − done_t)·V_{t+1} − V_t` (`V` after the last step: `last_values`),
/// and value targets `A_t + V_t`, both `[step][column]`, in f32 in this
/// order of operations.
///
/// # Errors
/// [`ShapeError`] when a slice does not have its length.
pub fn advantages(
    samples: &Samples<'_>,
    gamma: f32,
    lambda: f32,
) -> Result<(Vec<f32>, Vec<f32>), ShapeError> {
    let Samples {
        steps,
        columns,
        rewards,
        values,
        dones,
        last_values,
    } = *samples;
    let len = product("samples", &[steps, columns])?;
    length("rewards", len, rewards.len())?;
    length("values", len, values.len())?;
    length("dones", len, dones.len())?;
    length("last_values", columns, last_values.len())?;
    let mut advantages = vec![0f32; len];
    for (c, &last_value) in last_values.iter().enumerate() {
        let mut next_advantage = 0.0;
        let mut next_value = last_value;
        for t in (0..steps).rev() {
            let i = t * columns + c;
            let live = 1.0 - dones[i];
            let delta = rewards[i] + gamma * next_value * live - values[i];
            next_advantage = delta + gamma * lambda * live * next_advantage;
            advantages[i] = next_advantage;
            next_value = values[i];
        }
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Ok((advantages, returns))
}

/// Standardises `advantages` in place: `(A − mean) / max(std, 1e-8)` over
/// all of them (mean and population variance in f64); fewer than 2 values
/// are left as they are.
pub fn standardise(advantages: &mut [f32]) {
    if advantages.len() < 2 {
        return;
    }
    let n = advantages.len() as f64;
    let mean = advantages.iter().map(|&a| f64::from(a)).sum::<f64>() / n;
    let var = advantages
        .iter()
        .map(|&a| (f64::from(a) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt().max(1e-8);
    advantages
        .iter_mut()
        .for_each(|a| *a = ((f64::from(*a) - mean) / std) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_and_lambda_cut_at_episode_ends_and_bootstrap_the_rest() {
        // 3 steps × 2 columns, γ = λ = 0.5. Column 0's episode ends at step
        // 1 (no bootstrap across it); both rollouts end truncated after
        // step 2 and bootstrap from `last_values`.
        let samples = Samples {
            steps: 3,
            columns: 2,
            rewards: &[1.0, 0.0, 2.0, -1.0, 3.0, 1.0],
            values: &[0.5, 0.2, 1.0, 0.4, 1.5, -0.2],
            dones: &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            last_values: &[2.0, -1.0],
        };
        let (advantages, returns) = advantages(&samples, 0.5, 0.5).unwrap();
        // By hand, δ_t = r_t + γ·V_{t+1}·(1 − done_t) − V_t and
        // A_t = δ_t + γλ·(1 − done_t)·A_{t+1}:
        // column 0: δ₂ = 3 + 0.5·2 − 1.5 = 2.5, A₂ = 2.5; δ₁ = 2 − 1 = 1
        //   (done), A₁ = 1; δ₀ = 1 + 0.5·1 − 0.5 = 1, A₀ = 1 + 0.25·1 = 1.25;
        // column 1: δ₂ = 1 − 0.5 + 0.2 = 0.7; δ₁ = −1 − 0.1 − 0.4 = −1.5,
        //   A₁ = −1.5 + 0.25·0.7 = −1.325; δ₀ = 0.2 − 0.2 = 0,
        //   A₀ = 0.25·(−1.325) = −0.33125.
        let want: [f64; 6] = [1.25, -0.33125, 1.0, -1.325, 2.5, 0.7];
        for (i, (&got, want)) in advantages.iter().zip(want).enumerate() {
            assert!(
                (f64::from(got) - want).abs() < 1e-6,
                "A[{i}] = {got}, want {want}"
            );
        }
        let want_returns: [f64; 6] = [1.75, -0.13125, 2.0, -0.925, 4.0, 0.5];
        for (i, (&got, want)) in returns.iter().zip(want_returns).enumerate() {
            assert!(
                (f64::from(got) - want).abs() < 1e-6,
                "R[{i}] = {got}, want {want}"
            );
        }
        // Standardised: (A − mean)/std over the batch.
        let mut standardised = advantages.clone();
        standardise(&mut standardised);
        let mean = want.iter().sum::<f64>() / 6.0;
        let std = (want.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 6.0).sqrt();
        for (&got, a) in standardised.iter().zip(want) {
            assert!((f64::from(got) - (a - mean) / std).abs() < 1e-5);
        }
    }

    #[test]
    fn slices_of_the_wrong_length_are_errors() {
        let samples = Samples {
            steps: 2,
            columns: 2,
            rewards: &[0.0; 4],
            values: &[0.0; 4],
            dones: &[0.0; 3],
            last_values: &[0.0; 2],
        };
        assert!(matches!(
            advantages(&samples, 0.9, 0.9),
            Err(ShapeError::Length { field: "dones", .. })
        ));
        let huge = Samples {
            steps: usize::MAX,
            columns: 2,
            ..samples
        };
        assert!(advantages(&huge, 0.9, 0.9).is_err());
    }
}
