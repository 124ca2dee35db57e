//! The project's deterministic random numbers.
//!
//! Every stream is a [`Xoshiro128PlusPlus`] (u32 output, so a WGSL kernel
//! can run the same stream) seeded with SplitMix64 from a `u64`
//! (`SeedableRng::seed_from_u64`). Which draws happen where:
//!
//! * **master stream** of an env, seeded by `reset(seed)`: one episode seed
//!   per reset ([`draw_episode_seed`]), and the evaluation seed list;
//! * **episode stream**, seeded by the episode seed: the input-rate
//!   generator of that episode (section 4 of the spec);
//! * **build stream**, seeded by `build_seed`: the concrete values of the
//!   configuration; link `i`'s generated bandwidth uses its own stream
//!   seeded `build_seed * (i + 1)`; `node_ram_gb_range` draws one RAM per
//!   node, in agent order, from its own stream seeded `build_seed ^
//!   NODE_RAM_STREAM` ([`crate::config::NODE_RAM_STREAM`]);
//! * **generator streams**, seeded by a `network_generator`'s own `seed`:
//!   the random topologies (see [`crate::config::generator`]).
//! * env `i` of a [`crate::BatchEnv`] reset with seed `s` uses the master
//!   seed [`env_master_seed`]`(s, i)`.

use rand_core::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
pub use rand_xoshiro::Xoshiro128PlusPlus;

/// A stream seeded from `seed` with SplitMix64.
#[must_use]
pub fn seeded(seed: u64) -> Xoshiro128PlusPlus {
    Xoshiro128PlusPlus::seed_from_u64(seed)
}

/// Master seed of env `index` in a batch reset with `batch_seed`: one
/// SplitMix64 output of `batch_seed + index·φ` (φ = 0x9E37_79B9_7F4A_7C15).
#[must_use]
pub fn env_master_seed(batch_seed: u64, index: u64) -> u64 {
    let mut z = batch_seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An episode seed, uniform on `[0, 2³² − 2]` (as the reference draws it).
pub fn draw_episode_seed<R: Rng + ?Sized>(rng: &mut R) -> u32 {
    loop {
        let x = rng.next_u32();
        if x != u32::MAX {
            return x;
        }
    }
}

/// Uniform on `[0, 1)` with 53 random bits.
pub fn uniform01<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform on `[lo, hi)`.
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * uniform01(rng)
}

/// Uniform integer in `[0, n)` without bias (Lemire's method); 0 if `n == 0`.
pub fn below<R: Rng + ?Sized>(rng: &mut R, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u64::from(rng.next_u32()) * u64::from(n);
        if (m as u32) >= threshold {
            return (m >> 32) as u32;
        }
    }
}

/// Uniform integer in `[lo, hi]` (inclusive; `lo` when `hi < lo`).
/// Uniform for spans below 2³², nearly so above.
pub fn inclusive<R: Rng + ?Sized>(rng: &mut R, lo: i64, hi: i64) -> i64 {
    if hi < lo {
        return lo;
    }
    // hi − lo + 1 in [1, 2⁶⁴] (0 stands for 2⁶⁴: every u64); a span of 1
    // still takes its draw, so the stream does not depend on it.
    let span = hi.abs_diff(lo).wrapping_add(1);
    let offset = match span {
        0 => rng.next_u64(),
        s if s > u64::from(u32::MAX) => rng.next_u64() % s,
        s => u64::from(below(rng, s as u32)),
    };
    lo.wrapping_add_unsigned(offset)
}

/// Standard normal draw (ziggurat, `rand_distr::StandardNormal`).
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    StandardNormal.sample(rng)
}

/// Fisher–Yates shuffle.
pub fn shuffle<T, R: Rng + ?Sized>(rng: &mut R, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, (i + 1) as u32) as usize;
        items.swap(i, j);
    }
}

/// A normal draw truncated to `[lo, hi]` with mean `mean` and standard
/// deviation `std` (exact sampling, Robert 1995). With `std == 0` (or
/// `lo == hi`) it returns `mean` clamped to the interval; NaN for an empty
/// interval (`lo > hi`) or NaN inputs.
pub fn truncated_normal<R: Rng + ?Sized>(
    rng: &mut R,
    mean: f64,
    std: f64,
    lo: f64,
    hi: f64,
) -> f64 {
    if lo.is_nan() || hi.is_nan() || lo > hi || mean.is_nan() {
        return f64::NAN;
    }
    if std <= 0.0 || lo == hi {
        return mean.clamp(lo, hi);
    }
    let a = (lo - mean) / std;
    let b = (hi - mean) / std;
    let z = if a >= 0.0 {
        upper_tail(rng, a, b)
    } else if b <= 0.0 {
        -upper_tail(rng, -b, -a)
    } else if b - a >= 2.5 {
        // The interval holds at least a third of the mass: plain rejection.
        loop {
            let z = standard_normal(rng);
            if (a..=b).contains(&z) {
                break z;
            }
        }
    } else {
        // Short interval around 0: uniform proposal, accepted with the
        // density ratio exp(−z²/2) (at least e^{-3.1}).
        loop {
            let z = uniform(rng, a, b);
            if uniform01(rng) <= libm::exp(-0.5 * z * z) {
                break z;
            }
        }
    };
    (mean + std * z).clamp(lo, hi)
}

/// Standard normal truncated to `[a, b]` with `0 <= a < b`.
fn upper_tail<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let alpha = 0.5 * (a + libm::sqrt(a * a + 4.0));
    // Robert's rule: a uniform proposal beats the exponential one when the
    // interval is short compared with the tail's scale.
    let uniform_better = b - a < (2.0 / alpha) * libm::exp(0.5 * (a * a - a * alpha) + 0.5);
    loop {
        if uniform_better {
            let z = uniform(rng, a, b);
            if uniform01(rng) <= libm::exp(0.5 * (a * a - z * z)) {
                return z;
            }
        } else {
            let z = a - libm::log(1.0 - uniform01(rng)) / alpha;
            if z <= b && uniform01(rng) <= libm::exp(-0.5 * (z - alpha) * (z - alpha)) {
                return z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_seeds_are_reproducible() {
        let mut a = seeded(7);
        let mut b = seeded(7);
        for _ in 0..100 {
            assert_eq!(draw_episode_seed(&mut a), draw_episode_seed(&mut b));
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = seeded(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[below(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
        assert_eq!(below(&mut rng, 0), 0);
    }

    #[test]
    fn inclusive_covers_extreme_spans_without_overflow() {
        let mut rng = seeded(2);
        for _ in 0..1000 {
            let v = inclusive(&mut rng, -3, 3);
            assert!((-3..=3).contains(&v));
            let _ = inclusive(&mut rng, i64::MIN, i64::MAX);
            assert!(inclusive(&mut rng, i64::MAX - 1, i64::MAX) >= i64::MAX - 1);
        }
        assert_eq!(
            inclusive(&mut rng, 5, 1),
            5,
            "an empty range gives its start"
        );
        // A one-value range takes a draw, as any other.
        let (mut a, mut b) = (seeded(9), seeded(9));
        assert_eq!(inclusive(&mut a, 4, 4), 4);
        let _ = below(&mut b, 1);
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn truncated_normal_of_an_empty_interval_is_nan() {
        let mut rng = seeded(4);
        assert!(truncated_normal(&mut rng, 0.0, 0.0, 5.0, 1.0).is_nan());
        assert!(truncated_normal(&mut rng, f64::NAN, 1.0, 0.0, 1.0).is_nan());
        assert_eq!(truncated_normal(&mut rng, 9.0, 0.0, 0.0, 1.0), 1.0);
    }

    #[test]
    fn truncated_normal_stays_inside_and_has_the_right_mean() {
        let mut rng = seeded(3);
        // Default request size: N(1024, 1024) truncated to [100, 5242880].
        let n = 20000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = truncated_normal(&mut rng, 1024.0, 1024.0, 100.0, 5_242_880.0);
            assert!((100.0..=5_242_880.0).contains(&x));
            sum += x;
        }
        // Mean of N(μ,σ) truncated below at a = (100 − μ)/σ: μ + σ·φ(a)/(1−Φ(a)).
        let a: f64 = (100.0 - 1024.0) / 1024.0;
        let pdf = libm::exp(-0.5 * a * a) / libm::sqrt(2.0 * core::f64::consts::PI);
        let cdf = 0.5 * libm::erfc(-a / core::f64::consts::SQRT_2);
        let expected = 1024.0 + 1024.0 * pdf / (1.0 - cdf);
        assert!(
            (sum / n as f64 - expected).abs() < 15.0,
            "{}",
            sum / n as f64
        );
        // Far tails and degenerate cases.
        for _ in 0..1000 {
            let x = truncated_normal(&mut rng, 0.0, 1.0, 8.0, 8.5);
            assert!((8.0..=8.5).contains(&x));
            let y = truncated_normal(&mut rng, 0.0, 1.0, -30.0, -20.0);
            assert!((-30.0..=-20.0).contains(&y));
        }
        assert_eq!(truncated_normal(&mut rng, 500.0, 0.0, 100.0, 200.0), 200.0);
    }
}
