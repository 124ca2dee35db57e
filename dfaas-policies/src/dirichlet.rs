//! The Dirichlet distribution of the actor head: sampling (from Gamma
//! draws of the project's seeded RNG), log-density, entropy and the KL
//! divergence, each with its gradient with respect to the concentrations.
//!
//! Values are f32 at the interface and computed in f64 inside. A sample's
//! entries are floored at [`MIN_ENTRY`] before taking logarithms, so a
//! Gamma draw that underflows to 0 cannot produce an infinite log-density.

use crate::error::{ShapeError, length};
use crate::special::{digamma, digamma_trigamma, ln_gamma, trigamma};
use rand_core::Rng;
use rand_distr::{Distribution, Gamma};

/// Smallest entry used inside logarithms.
pub const MIN_ENTRY: f64 = 1e-30;

/// Largest dimension [`sample`] draws without allocation (the env's
/// `MAX_ACTIONS`).
pub const MAX_ENTRIES: usize = 64;

/// Draws a point of the simplex from Dir(α) into `out` (same length, at
/// most [`MAX_ENTRIES`] entries).
///
/// # Errors
/// [`ShapeError`] when `out` is not as long as `alpha` or either is
/// longer than [`MAX_ENTRIES`] (nothing drawn or written).
pub fn sample<R: Rng + ?Sized>(
    alpha: &[f32],
    rng: &mut R,
    out: &mut [f32],
) -> Result<(), ShapeError> {
    length("out", alpha.len(), out.len())?;
    if alpha.len() > MAX_ENTRIES {
        return Err(ShapeError::OutOfRange {
            field: "alpha",
            min: 0,
            max: MAX_ENTRIES,
            got: alpha.len(),
        });
    }
    let mut draws = [0f64; MAX_ENTRIES];
    let draws = &mut draws[..alpha.len()];
    for (d, &a) in draws.iter_mut().zip(alpha) {
        *d = Gamma::new(f64::from(a), 1.0).map_or(0.0, |g| g.sample(rng));
    }
    let total: f64 = draws.iter().sum();
    if total > 0.0 && total.is_finite() {
        for (o, d) in out.iter_mut().zip(draws.iter()) {
            *o = (d / total) as f32;
        }
    } else {
        // Every draw underflowed: the mass goes to the largest concentration.
        let best = (0..alpha.len())
            .max_by(|&i, &j| alpha[i].total_cmp(&alpha[j]))
            .unwrap_or(0);
        for (i, o) in out.iter_mut().enumerate() {
            *o = if i == best { 1.0 } else { 0.0 };
        }
    }
    Ok(())
}

/// ln p(x | α); writes ∂/∂α into `grad` (same length).
pub fn log_prob(alpha: &[f32], x: &[f32], grad: &mut [f32]) -> f32 {
    let a0: f64 = alpha.iter().map(|&a| f64::from(a)).sum();
    let psi0 = digamma(a0);
    let mut value = ln_gamma(a0);
    for ((g, &a), &xi) in grad.iter_mut().zip(alpha).zip(x) {
        let (a, ln_x) = (f64::from(a), f64::from(xi).max(MIN_ENTRY).ln());
        value += (a - 1.0) * ln_x - ln_gamma(a);
        *g = (psi0 - digamma(a) + ln_x) as f32;
    }
    value as f32
}

/// Entropy H(Dir(α)); writes ∂H/∂α into `grad`.
pub fn entropy(alpha: &[f32], grad: &mut [f32]) -> f32 {
    let k = alpha.len() as f64;
    let a0: f64 = alpha.iter().map(|&a| f64::from(a)).sum();
    let (psi0, tri0) = (digamma(a0), trigamma(a0));
    let mut value = -ln_gamma(a0) + (a0 - k) * psi0;
    for (g, &a) in grad.iter_mut().zip(alpha) {
        let a = f64::from(a);
        value += ln_gamma(a) - (a - 1.0) * digamma(a);
        *g = ((a0 - k) * tri0 - (a - 1.0) * trigamma(a)) as f32;
    }
    value as f32
}

/// [`log_prob`] and [`entropy`] at once, `(ln p(x | α), H(Dir(α)))`,
/// writing their gradients into `grad_log_prob` and `grad_entropy`: each
/// special function is evaluated once per concentration, and every value
/// is bit for bit what the two functions return.
pub fn log_prob_and_entropy(
    alpha: &[f32],
    x: &[f32],
    grad_log_prob: &mut [f32],
    grad_entropy: &mut [f32],
) -> (f32, f32) {
    let k = alpha.len() as f64;
    let a0: f64 = alpha.iter().map(|&a| f64::from(a)).sum();
    let ((psi0, tri0), ln_gamma0) = (digamma_trigamma(a0), ln_gamma(a0));
    let mut log_p = ln_gamma0;
    let mut h = -ln_gamma0 + (a0 - k) * psi0;
    for (((g_lp, g_h), &a), &xi) in grad_log_prob
        .iter_mut()
        .zip(grad_entropy.iter_mut())
        .zip(alpha)
        .zip(x)
    {
        let (a, ln_x) = (f64::from(a), f64::from(xi).max(MIN_ENTRY).ln());
        let ((psi, tri), ln_gamma_a) = (digamma_trigamma(a), ln_gamma(a));
        log_p += (a - 1.0) * ln_x - ln_gamma_a;
        *g_lp = (psi0 - psi + ln_x) as f32;
        h += ln_gamma_a - (a - 1.0) * psi;
        *g_h = ((a0 - k) * tri0 - (a - 1.0) * tri) as f32;
    }
    (log_p as f32, h as f32)
}

/// KL(Dir(α_old) ‖ Dir(α_new)); writes ∂/∂α_new into `grad`.
pub fn kl(alpha_old: &[f32], alpha_new: &[f32], grad: &mut [f32]) -> f32 {
    let a0: f64 = alpha_old.iter().map(|&a| f64::from(a)).sum();
    let b0: f64 = alpha_new.iter().map(|&b| f64::from(b)).sum();
    let (psi_a0, psi_b0) = (digamma(a0), digamma(b0));
    let mut value = ln_gamma(a0) - ln_gamma(b0);
    for ((g, &a), &b) in grad.iter_mut().zip(alpha_old).zip(alpha_new) {
        let (a, b) = (f64::from(a), f64::from(b));
        let centred = digamma(a) - psi_a0;
        value += ln_gamma(b) - ln_gamma(a) + (a - b) * centred;
        *g = (digamma(b) - psi_b0 - centred) as f32;
    }
    value as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfaas_core::rng::seeded;

    /// Central finite difference of `f` at `alpha` along entry `j`, in f64.
    fn numeric(f: impl Fn(&[f32]) -> f32, alpha: &[f32], j: usize) -> f64 {
        let h = 1e-3 * f64::from(alpha[j]).max(0.1);
        let mut plus = alpha.to_vec();
        let mut minus = alpha.to_vec();
        plus[j] = (f64::from(alpha[j]) + h) as f32;
        minus[j] = (f64::from(alpha[j]) - h) as f32;
        let dh = f64::from(plus[j]) - f64::from(minus[j]);
        (f64::from(f(&plus)) - f64::from(f(&minus))) / dh
    }

    fn check(analytic: &[f32], f: impl Fn(&[f32]) -> f32, alpha: &[f32]) {
        for (j, &g) in analytic.iter().enumerate() {
            let n = numeric(&f, alpha, j);
            let a = f64::from(g);
            assert!(
                (a - n).abs() <= 2e-3 * (1.0 + n.abs()),
                "entry {j}: analytic {a}, numeric {n} (α = {alpha:?})"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let cases: [&[f32]; 4] = [
            &[1.0, 1.0, 1.0],
            &[0.3, 2.0, 5.0, 0.8],
            &[12.0, 7.5],
            &[0.9, 0.05, 3.0],
        ];
        let x: [f32; 4] = [0.2, 0.5, 0.25, 0.05];
        for alpha in cases {
            let k = alpha.len();
            let mut x = x[..k].to_vec();
            let s: f32 = x.iter().sum();
            x.iter_mut().for_each(|v| *v /= s);
            let mut g = vec![0f32; k];
            log_prob(alpha, &x, &mut g);
            check(&g, |a| log_prob(a, &x, &mut vec![0.0; k]), alpha);
            entropy(alpha, &mut g);
            check(&g, |a| entropy(a, &mut vec![0.0; k]), alpha);
            let old: Vec<f32> = alpha.iter().map(|a| a * 1.3 + 0.1).collect();
            kl(&old, alpha, &mut g);
            check(&g, |a| kl(&old, a, &mut vec![0.0; k]), alpha);
        }
    }

    #[test]
    fn the_fused_terms_are_log_prob_and_entropy_bit_for_bit() {
        let mut rng = seeded(11);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for k in 1..=8 {
            for _ in 0..200 {
                // Concentrations from the ε floor to the hundreds, points
                // with entries at and below the log floor.
                let alpha: Vec<f32> = (0..k)
                    .map(|_| 10f32.powf(rng.next_u32() as f32 / u32::MAX as f32 * 9.0 - 7.0))
                    .collect();
                let mut x = vec![0f32; k];
                sample(&alpha, &mut rng, &mut x).unwrap();
                let (mut g_lp, mut g_h) = (vec![0f32; k], vec![0f32; k]);
                let (lp, h) = log_prob_and_entropy(&alpha, &x, &mut g_lp, &mut g_h);
                let (mut want_lp, mut want_h) = (vec![0f32; k], vec![0f32; k]);
                assert_eq!(lp.to_bits(), log_prob(&alpha, &x, &mut want_lp).to_bits());
                assert_eq!(h.to_bits(), entropy(&alpha, &mut want_h).to_bits());
                assert_eq!(bits(&g_lp), bits(&want_lp), "α = {alpha:?}, x = {x:?}");
                assert_eq!(bits(&g_h), bits(&want_h), "α = {alpha:?}");
            }
        }
    }

    #[test]
    fn known_values() {
        let mut g = [0f32; 3];
        // Dir(1,1,1) is uniform on the 2-simplex (area 1/2): density 2.
        assert!((log_prob(&[1.0, 1.0, 1.0], &[0.2, 0.3, 0.5], &mut g) - 2f32.ln()).abs() < 1e-6);
        assert!((entropy(&[1.0, 1.0, 1.0], &mut g) + 2f32.ln()).abs() < 1e-6);
        assert!(kl(&[2.0, 3.0, 4.0], &[2.0, 3.0, 4.0], &mut g).abs() < 1e-6);
    }

    #[test]
    fn samples_lie_on_the_simplex_with_the_right_mean() {
        let mut rng = seeded(3);
        let alpha = [0.5f32, 2.0, 5.5];
        let mut x = [0f32; 3];
        let mut sum = [0f64; 3];
        let n = 20000;
        for _ in 0..n {
            sample(&alpha, &mut rng, &mut x).unwrap();
            assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-5 && x.iter().all(|&v| v >= 0.0));
            for (s, v) in sum.iter_mut().zip(x) {
                *s += f64::from(v);
            }
        }
        for (s, a) in sum.iter().zip(alpha) {
            assert!((s / f64::from(n) - f64::from(a) / 8.0).abs() < 0.01);
        }
        // Concentrations at the ε floor: no NaN.
        sample(&[1e-7, 1e-7, 1e-7], &mut rng, &mut x).unwrap();
        assert!(x.iter().all(|v| v.is_finite()) && (x.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn samples_of_the_wrong_size_are_errors() {
        let mut rng = seeded(3);
        let mut x = [7f32; 2];
        assert!(sample(&[1.0, 1.0, 1.0], &mut rng, &mut x).is_err());
        assert_eq!(x, [7.0; 2]);
        let wide = [1f32; MAX_ENTRIES + 1];
        let mut out = [0f32; MAX_ENTRIES + 1];
        assert!(matches!(
            sample(&wide, &mut rng, &mut out),
            Err(ShapeError::OutOfRange { got: 65, .. })
        ));
    }
}
