//! Special functions for the Dirichlet distribution: `ln Γ` (from `libm`),
//! digamma ψ and trigamma ψ′, in f64 and f32.
//!
//! ψ and ψ′ shift the argument up with the recurrences ψ(x) = ψ(x+1) − 1/x,
//! ψ′(x) = ψ′(x+1) + 1/x² until x ≥ 10, then use the asymptotic series
//! (truncation error below 1e-13 there). Defined for x > 0: NaN for x ≤ 0
//! or NaN (every call ends, also for −∞ and large negative x, where
//! `x + 1 == x`); ψ(+∞) = +∞, ψ′(+∞) = 0. The f32 versions evaluate in f64
//! and round once.

/// ln Γ(x) for x > 0.
#[must_use]
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// ln Γ(x) for x > 0 (f32).
#[must_use]
pub fn ln_gamma_f32(x: f32) -> f32 {
    libm::lgamma(f64::from(x)) as f32
}

/// Digamma ψ(x) = d/dx ln Γ(x), x > 0 (NaN otherwise).
#[must_use]
pub fn digamma(mut x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    digamma_series(shift, x)
}

/// `shift` + ψ(x), x ≥ 10 (or +∞), from the asymptotic series.
fn digamma_series(shift: f64, x: f64) -> f64 {
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv2
        * (1.0 / 12.0
            - inv2
                * (1.0 / 120.0
                    - inv2
                        * (1.0 / 252.0
                            - inv2
                                * (1.0 / 240.0
                                    - inv2 * (1.0 / 132.0 - inv2 * (691.0 / 32760.0))))));
    shift + libm::log(x) - 0.5 * inv - series
}

/// Digamma (f32).
#[must_use]
pub fn digamma_f32(x: f32) -> f32 {
    digamma(f64::from(x)) as f32
}

/// Trigamma ψ′(x) = d/dx ψ(x), x > 0 (NaN otherwise).
#[must_use]
pub fn trigamma(mut x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    let mut shift = 0.0;
    while x < 10.0 {
        shift += 1.0 / (x * x);
        x += 1.0;
    }
    trigamma_series(shift, x)
}

/// `shift` + ψ′(x), x ≥ 10 (or +∞), from the asymptotic series.
fn trigamma_series(shift: f64, x: f64) -> f64 {
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv
        + 0.5 * inv2
        + inv
            * inv2
            * (1.0 / 6.0
                - inv2
                    * (1.0 / 30.0
                        - inv2
                            * (1.0 / 42.0
                                - inv2
                                    * (1.0 / 30.0
                                        - inv2 * (5.0 / 66.0 - inv2 * (691.0 / 2730.0))))));
    shift + series
}

/// `(ψ(x), ψ′(x))` from one shift of the argument, for callers that need
/// both: bit for bit `(digamma(x), trigamma(x))`.
#[must_use]
pub fn digamma_trigamma(mut x: f64) -> (f64, f64) {
    if x.is_nan() || x <= 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let (mut psi_shift, mut tri_shift) = (0.0, 0.0);
    while x < 10.0 {
        psi_shift -= 1.0 / x;
        tri_shift += 1.0 / (x * x);
        x += 1.0;
    }
    (digamma_series(psi_shift, x), trigamma_series(tri_shift, x))
}

/// Trigamma (f32).
#[must_use]
pub fn trigamma_f32(x: f32) -> f32 {
    trigamma(f64::from(x)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const EULER: f64 = 0.577_215_664_901_532_9;

    #[test]
    fn known_values() {
        // ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(10) = H_9 − γ.
        assert!((digamma(1.0) + EULER).abs() < 1e-13);
        assert!((digamma(0.5) + EULER + 2.0 * std::f64::consts::LN_2).abs() < 1e-13);
        let h9: f64 = (1..=9).map(|k| 1.0 / f64::from(k)).sum();
        assert!((digamma(10.0) - (h9 - EULER)).abs() < 1e-13);
        // ψ′(1) = π²/6, ψ′(1/2) = π²/2.
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        assert!((trigamma(1.0) - pi2 / 6.0).abs() < 1e-13);
        assert!((trigamma(0.5) - pi2 / 2.0).abs() < 1e-13);
        // ln Γ(1/2) = ln √π, ln Γ(10) = ln 9!.
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
        // Tiny arguments (concentrations near the ε floor): ψ(x) ≈ −1/x − γ.
        assert!((digamma(1e-7) - (-1e7 - EULER)).abs() < 1e-6);
        assert!((digamma_f32(2.0) - (1.0 - EULER) as f32).abs() < 1e-6);
        assert!((trigamma_f32(1.0) - (pi2 / 6.0) as f32).abs() < 1e-6);
        assert!((ln_gamma_f32(5.0) - 24f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn outside_the_domain_every_call_ends_with_nan() {
        for x in [f64::NEG_INFINITY, -1e300, -3.0, -0.5, 0.0, f64::NAN] {
            assert!(digamma(x).is_nan(), "ψ({x})");
            assert!(trigamma(x).is_nan(), "ψ′({x})");
        }
        assert_eq!(digamma(f64::INFINITY), f64::INFINITY);
        assert_eq!(trigamma(f64::INFINITY), 0.0);
        // The smallest positive value: ten shifts, a finite or −∞ result.
        assert!(!digamma(f64::MIN_POSITIVE).is_nan());
    }

    #[test]
    fn the_fused_pair_is_digamma_and_trigamma_bit_for_bit() {
        // Every shift count (0 to 10), the floor of the concentrations,
        // large and non-finite arguments and the domain's edge.
        let mut xs = vec![
            1e-7,
            f64::MIN_POSITIVE,
            1e300,
            f64::INFINITY,
            0.0,
            -2.0,
            f64::NAN,
        ];
        xs.extend((0..4000).map(|i| f64::from(i) * 0.003_7 + 1e-3));
        for x in xs {
            let (psi, tri) = digamma_trigamma(x);
            assert_eq!(psi.to_bits(), digamma(x).to_bits(), "ψ({x})");
            assert_eq!(tri.to_bits(), trigamma(x).to_bits(), "ψ′({x})");
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for &x in &[0.05, 0.3, 1.0, 2.5, 7.0, 40.0] {
            let h = 1e-6 * x;
            let d_lgamma = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(
                (d_lgamma - digamma(x)).abs() < 1e-6 * (1.0 + digamma(x).abs()),
                "ψ({x})"
            );
            let d_digamma = (digamma(x + h) - digamma(x - h)) / (2.0 * h);
            assert!(
                (d_digamma - trigamma(x)).abs() < 1e-5 * (1.0 + trigamma(x)),
                "ψ′({x})"
            );
        }
    }
}
