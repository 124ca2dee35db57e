//! Bandwidth traces of `generated` links (spec §2).
//!
//! The base trace (Mbps per sample; the `Throughput` column of a
//! `5G_trace.csv`-style file) is scaled to the link's mean; the pool is the
//! scaled trace, five circular shifts of it (each by an integer uniform in
//! [−1000, 1000]) and the trace with its halves swapped, concatenated.
//! `max_steps` uniform indices into the pool are drawn first, then as many
//! noise values u uniform in `[−noise, noise)`; each value is
//! `pool[index]·(1 + u)`, rounded to 2 decimals then to an integer (both
//! half to even). Unlike the reference, values are at least 1 Mbps (the
//! reference can produce 0 Mbps, about once in 20 000 values, and then
//! divides by zero when a request crosses that link).
//!
//! Without a base trace file the **fallback** is a flat base trace, so
//! generated values are `mean·(1 + u)`, rounded: the same mean and noise,
//! none of the 5G trace's variability.

use crate::alloc_prelude::*;
use crate::rng::{below, inclusive, seeded, uniform};

/// The built-in base trace used when no file is given: flat.
pub const FALLBACK_BASE_TRACE: [f64; 1] = [1.0];

/// Generates one link's trace of `max_steps` integer values (as f64) from
/// `base`, with the RNG stream seeded `seed` (the build step passes
/// `build_seed · (i + 1)` for the i-th generated link in link order).
#[must_use]
pub fn generate_trace(
    base: &[f64],
    max_steps: usize,
    mean: f64,
    noise: f64,
    seed: u64,
) -> Vec<f64> {
    let base = if base.is_empty() {
        &FALLBACK_BASE_TRACE[..]
    } else {
        base
    };
    let n = base.len();
    let current_mean = base.iter().sum::<f64>() / n as f64;
    let scale = if current_mean == 0.0 {
        1.0
    } else {
        mean / current_mean
    };
    let mut rng = seeded(seed);
    let mut shifts = [0i64; 5];
    for s in &mut shifts {
        *s = inclusive(&mut rng, -1000, 1000);
    }
    let pool_value = |k: usize| -> f64 {
        let (copy, j) = (k / n, k % n);
        let source = match copy {
            0 => j,
            1..=5 => (j as i64 - shifts[copy - 1]).rem_euclid(n as i64) as usize,
            _ => (j + n / 2) % n,
        };
        base[source] * scale
    };
    let pool_len = u32::try_from(7 * n).unwrap_or(u32::MAX);
    let indices: Vec<usize> = (0..max_steps)
        .map(|_| below(&mut rng, pool_len) as usize)
        .collect();
    indices
        .into_iter()
        .map(|k| {
            let u = uniform(&mut rng, -noise, noise);
            round_bandwidth(pool_value(k) * (1.0 + u))
        })
        .collect()
}

/// Rounds to 2 decimals, then to an integer (both half to even, as numpy
/// does), and raises the result to at least 1 Mbps.
#[must_use]
pub fn round_bandwidth(value: f64) -> f64 {
    let two_decimals = libm::rint(value * 100.0) / 100.0;
    libm::rint(two_decimals).max(1.0)
}

/// Reads the `Throughput` column (Mbps) of a CSV file.
///
/// # Errors
/// [`crate::ConfigError::Io`] when the file cannot be read, has no
/// `Throughput` column, a non-numeric or negative value, or no rows.
#[cfg(feature = "std")]
pub fn load_base_trace(path: &std::path::Path) -> Result<Vec<f64>, crate::ConfigError> {
    let io = |message: String| crate::ConfigError::Io {
        path: path.display().to_string(),
        message,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| io(e.to_string()))?;
    let headers = reader.headers().map_err(|e| io(e.to_string()))?.clone();
    let column = headers
        .iter()
        .position(|h| h.trim() == "Throughput")
        .ok_or_else(|| io("no `Throughput` column".into()))?;
    let mut values = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| io(e.to_string()))?;
        let cell = record.get(column).unwrap_or("").trim();
        let value: f64 = cell.parse().map_err(|_| {
            io(format!(
                "row {}: Throughput `{cell}` is not a number",
                row + 2
            ))
        })?;
        if !(value.is_finite() && value >= 0.0) {
            return Err(io(format!(
                "row {}: Throughput must be finite and >= 0, got {value}",
                row + 2
            )));
        }
        values.push(value);
    }
    if values.is_empty() {
        return Err(io("no data rows".into()));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_stays_within_the_noise_band() {
        let trace = generate_trace(&[], 288, 100.0, 0.1, 42);
        assert_eq!(trace.len(), 288);
        assert!(
            trace
                .iter()
                .all(|&v| (90.0..=110.0).contains(&v) && v.fract() == 0.0)
        );
    }

    #[test]
    fn two_stage_rounding_is_half_to_even_twice() {
        // 3.4951 → 3.5 (two decimals) → 4 (even); one rounding would give 3.
        assert_eq!(round_bandwidth(3.4951), 4.0);
        assert_eq!(round_bandwidth(2.4951), 2.0);
        assert_eq!(round_bandwidth(2.5), 2.0);
        assert_eq!(round_bandwidth(0.3), 1.0);
    }

    #[test]
    fn same_seed_same_trace_and_seed_zero_repeats() {
        let base: Vec<f64> = (0..500).map(|i| f64::from(i % 37) + 1.0).collect();
        let a = generate_trace(&base, 50, 100.0, 0.1, 0);
        let b = generate_trace(&base, 50, 100.0, 0.1, 0);
        assert_eq!(a, b);
        assert_ne!(a, generate_trace(&base, 50, 100.0, 0.1, 7));
    }
}
